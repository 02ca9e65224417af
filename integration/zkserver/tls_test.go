package zkserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

func TestZooCfgTLS(t *testing.T) {
	opts, err := Options{Dir: "/z", TLS: &TLS{KeyStore: "/p/server.pem", TrustStore: "/p/ca.pem"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodeConfig{opts: opts, dir: "/z", clientPort: 4000, securePort: 4001}.zooCfg()
	for _, want := range []string{
		"clientPort=4000\n", "secureClientPort=4001\n", "secureClientPortAddress=127.0.0.1\n",
		"serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n",
		"ssl.keyStore.location=/p/server.pem\n", "ssl.keyStore.type=PEM\n",
		"ssl.trustStore.location=/p/ca.pem\n", "ssl.trustStore.type=PEM\n",
		"ssl.clientAuth=none\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("TLS zoo.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "password") {
		t.Errorf("zoo.cfg has a password line for PEM stores without one:\n%s", cfg)
	}
	if strings.Contains(cfg, "sslQuorum") {
		t.Errorf("standalone zoo.cfg has quorum TLS:\n%s", cfg)
	}
	opts.TLS.Quorum = true
	peers := []peer{{id: 1, clientPort: 1, quorumPort: 2, electPort: 3, securePort: 4}}
	node := nodeConfig{opts: opts, dir: "/z/node1", clientPort: 1, securePort: 4, id: 1, peers: peers}.zooCfg()
	for _, want := range []string{"secureClientPort=4\n", "sslQuorum=true\n", "ssl.quorum.keyStore.location=/p/server.pem\n",
		"ssl.quorum.trustStore.location=/p/ca.pem\n", "ssl.quorum.keyStore.type=PEM\n"} {
		if !strings.Contains(node, want) {
			t.Errorf("ensemble TLS zoo.cfg lacks %q:\n%s", want, node)
		}
	}
	args := strings.Join(nodeConfig{opts: opts, dir: "/z"}.javaArgs(installation{}), " ")
	if !strings.Contains(args, "-Dzookeeper.serverCnxnFactory="+nettyFactory) {
		t.Errorf("java args lack the Netty factory: %s", args)
	}

	for _, bad := range []TLS{
		{KeyStore: "/p/a.pem"},
		{KeyStore: "/p/a.key", TrustStore: "/p/ca.pem"},
		{KeyStore: "/p/a.pem", TrustStore: "/p/ca.pem", ClientAuth: "maybe"},
		{KeyStore: "/p/a.pem", TrustStore: "/p/ca.pem", StoreType: "BKS"},
	} {
		if _, err := (Options{Dir: "/z", TLS: &bad}).withDefaults(); err == nil {
			t.Errorf("no error for %+v", bad)
		}
	}
	o, err := Options{Dir: "/z", TLS: &TLS{KeyStore: "s.p12", TrustStore: "t.p12"}}.withDefaults()
	if err != nil || o.TLS.StoreType != "PKCS12" || !filepath.IsAbs(o.TLS.KeyStore) {
		t.Errorf("PKCS12 by extension: %+v, %v", o.TLS, err)
	}
}

// needJava skips a test that needs a JVM (or keytool) when it is missing,
// unless CI is set: there, a missing tool is a failure.
func needJava(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a JVM")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found and CI=%s: %v", tool, os.Getenv("CI"), err)
			}
			t.Skipf("%s not found: %v (apt-get install -y openjdk-17-jre-headless zookeeper)", tool, err)
		}
	}
	if _, err := findInstallation(DefaultJava); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI=%s: %v", os.Getenv("CI"), err)
		}
		t.Skip(err)
	}
}

// clientTLS trusts ca and presents the client certificate, if given.
func clientTLS(t *testing.T, ca, cert, key string) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("no certificate in %s", ca)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// sessionOverTLS connects go-zookeeper through cfg to addrs and returns the
// error of a create and a read, or of getting no session within timeout.
func sessionOverTLS(t *testing.T, addrs string, cfg *tls.Config, timeout time.Duration) error {
	t.Helper()
	dialer := func(network, addr string, d time.Duration) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: d}, network, addr, cfg)
	}
	conn, events, err := zk.Connect(strings.Split(addrs, ","), 4*time.Second, zk.WithDialer(dialer), zk.WithLogger(discard{}))
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.After(timeout)
	for conn.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-deadline:
			return errors.New("no session over TLS")
		}
	}
	if _, err := conn.Create("/tls", []byte("x"), 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return err
	}
	_, _, err = conn.Get("/tls")
	return err
}

type discard struct{}

func (discard) Printf(string, ...any) {}

// TestTLSKeytoolStores runs the server on PKCS12 stores made by keytool,
// with client certificates required.
func TestTLSKeytoolStores(t *testing.T) {
	needJava(t, "keytool")
	dir := t.TempDir()
	pki, err := NewTestPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stores, err := pki.KeytoolStores("keytool-server", ClientAuthNeed, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("keytool stores in %s", time.Since(start).Round(time.Millisecond))
	s, err := Start(context.Background(), Options{Dir: filepath.Join(dir, "zk"), TLS: stores})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	if err := sessionOverTLS(t, s.SecureAddr(), clientTLS(t, pki.CA, pki.ClientCert, pki.ClientKey), 10*time.Second); err != nil {
		t.Fatalf("with a client certificate: %v\n%s", err, s.tail.lastLines(30))
	}
	if err := sessionOverTLS(t, s.SecureAddr(), clientTLS(t, pki.CA, "", ""), 2*time.Second); err == nil {
		t.Fatal("a client without a certificate got a session; ssl.clientAuth=need should refuse it")
	}
}

// TestTLSEnsemble: every member of a TLS ensemble (TLS between members
// too) serves TLS clients.
func TestTLSEnsemble(t *testing.T) {
	needJava(t)
	dir := t.TempDir()
	pki, err := NewTestPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tls := pki.TLS(ClientAuthNone)
	tls.Quorum = true
	e, err := StartEnsemble(ctx, 3, Options{Dir: filepath.Join(dir, "zk"), TLS: tls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop() })
	addrs := strings.Split(e.SecureConnectString(), ",")
	if len(addrs) != 3 {
		t.Fatalf("SecureConnectString = %q, want 3 addresses", e.SecureConnectString())
	}
	cfg := clientTLS(t, pki.CA, "", "")
	for i, a := range addrs {
		if err := sessionOverTLS(t, a, cfg, 10*time.Second); err != nil {
			t.Fatalf("member %d (%s): %v\n%s", i+1, a, err, e.Servers[i].tail.lastLines(30))
		}
	}
	if err := sessionOverTLS(t, e.SecureConnectString(), cfg, 10*time.Second); err != nil {
		t.Fatalf("the whole connect string: %v", err)
	}
	for _, s := range e.Servers {
		log, err := os.ReadFile(filepath.Join(s.Dir(), "zookeeper.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(log), "Using TLS encrypted quorum communication") {
			t.Errorf("member %d does not say it uses TLS between members (sslQuorum)", s.ID())
		}
	}
}

// TestNewTestPKI checks the files without a server: the key store's chain
// verifies for 127.0.0.1 and localhost, and the client certificate is one.
func TestNewTestPKI(t *testing.T) {
	pki, err := NewTestPKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	roots := clientTLS(t, pki.CA, "", "").RootCAs
	// The PEM key store is key + certificate + CA, which is also what
	// tls.LoadX509KeyPair reads when given the file twice.
	server, err := tls.LoadX509KeyPair(pki.ServerKeyStore, pki.ServerKeyStore)
	if err != nil {
		t.Fatalf("server key store %s: %v", pki.ServerKeyStore, err)
	}
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.0.0.1", Roots: roots}); err == nil {
		t.Error("server certificate verifies for 10.0.0.1")
	}
	client, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := x509.ParseCertificate(client.Certificate[0])
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	for _, key := range []string{pki.ServerKeyStore, pki.ClientKey} {
		fi, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600 (it holds a private key)", key, fi.Mode().Perm())
		}
	}
}
