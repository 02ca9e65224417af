package znodes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dcroll/integration/zkserver"

	"github.com/go-zookeeper/zk"
)

// failTimeout is the ConnectTimeout of the dials that must fail: short, so
// that a hang shows as a failure, yet long enough for a few attempts
// (go-zookeeper gives each attempt 1s) on a loaded machine.
const failTimeout = 2500 * time.Millisecond

// startTLSZK starts a real ZooKeeper with a secureClientPort using tls (a
// fresh one per test: the server's certificate differs between tests).
// Without java or the ZooKeeper package it skips, unless CI is set.
func startTLSZK(t *testing.T, tls *zkserver.TLS) *zkserver.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real ZooKeeper: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := zkserver.Start(ctx, zkserver.Options{Dir: t.TempDir(), TLS: tls})
	if errors.Is(err, zkserver.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skipf("%v (set CI=1 to make this a failure)", err)
	}
	if err != nil {
		t.Fatalf("start zookeeper with TLS: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			tail := strings.Split(strings.TrimRight(s.LogTail(), "\n"), "\n")
			t.Logf("last lines of the zookeeper log:\n%s", strings.Join(tail[max(0, len(tail)-30):], "\n"))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stop zookeeper: %v", err)
		}
	})
	return s
}

func newPKI(t *testing.T) *zkserver.PKI {
	t.Helper()
	p, err := zkserver.NewTestPKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsOptions are Dial options for addr with the given Security.
func tlsOptions(t *testing.T, addr string, sec Security) Options {
	t.Helper()
	o := Options{Servers: addr, Root: testRoot(t), SessionTimeout: testSession, ConnectTimeout: 10 * time.Second, Logger: discardLog()}
	if err := sec.Apply(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

// dialFails dials with o and checks that it fails in time with a one-line
// error wrapping ErrUnreachable that says why: every one of why is in it.
func dialFails(t *testing.T, o Options, why ...string) {
	t.Helper()
	o.ConnectTimeout = failTimeout
	start := time.Now()
	c, err := Dial(ctxT(t), o)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatalf("Dial %s succeeded; want a failure", o.Servers)
	}
	t.Logf("failed after %s: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("err = %v, want it to wrap ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("err = %q, want one line", err)
	}
	for _, w := range why {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q, want it to say %q", err, w)
		}
	}
	if limit := o.ConnectTimeout + 2*time.Second; took > limit {
		t.Errorf("Dial took %s, want at most %s (ConnectTimeout %s)", took, limit, o.ConnectTimeout)
	}
}

// roundTrip creates a node and reads it back over c.
func roundTrip(t *testing.T, c *Conn) {
	t.Helper()
	if err := c.EnsurePath(c.Paths().Root); err != nil {
		t.Fatalf("create %s over TLS: %v", c.Paths().Root, err)
	}
	p := c.Paths().Root + "/tls"
	if _, err := c.Create(p, []byte("over tls"), 0); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		t.Fatalf("create %s over TLS: %v", p, err)
	}
	data, _, err := c.ZK().Get(p)
	if err != nil || string(data) != "over tls" {
		t.Fatalf("get %s over TLS = %q, %v", p, data, err)
	}
}

func TestTLSDial(t *testing.T) {
	pki := newPKI(t)
	s := startTLSZK(t, pki.TLS(zkserver.ClientAuthNone))

	t.Run("right CA", func(t *testing.T) {
		c, err := Dial(ctxT(t), tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c)
	})
	t.Run("wrong CA", func(t *testing.T) {
		other := newPKI(t)
		dialFails(t, tlsOptions(t, s.SecureAddr(), Security{TLSCA: other.CA}), "zookeeper TLS handshake", "certificate signed by unknown authority", "not signed by a CA in --zk-tls-ca")
	})
	t.Run("plain client on the secure port", func(t *testing.T) {
		// The server drops what is not TLS: the client sees its connect
		// request unanswered.
		dialFails(t, tlsOptions(t, s.SecureAddr(), Security{}), "closed the connection before answering", "--zk-tls-ca")
	})
	t.Run("TLS client on the plain port", func(t *testing.T) {
		dialFails(t, tlsOptions(t, s.Addr(), Security{TLSCA: pki.CA}), "zookeeper TLS handshake", "EOF", "does not speak TLS")
	})
}

// TestTLSHostName: the server's certificate must name the host dialed. The
// CA is right; only the names differ.
func TestTLSHostName(t *testing.T) {
	pki := newPKI(t)
	store, err := pki.IssueServer("other", "zk.other.example", "10.9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	tls := pki.TLS(zkserver.ClientAuthNone)
	tls.KeyStore = store
	s := startTLSZK(t, tls)
	dialFails(t, tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA}), "zookeeper TLS handshake",
		"x509: certificate is valid for 10.9.9.9, not 127.0.0.1", "does not name the host in --zk")
}

// TestTLSDNSName: a certificate that names the server by DNS name only
// (the usual kind) works when the connect string uses that name: the
// dialer must see the name, not the address go-zookeeper resolved it to.
func TestTLSDNSName(t *testing.T) {
	pki := newPKI(t)
	store, err := pki.IssueServer("byname", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	tls := pki.TLS(zkserver.ClientAuthNone)
	tls.KeyStore = store
	s := startTLSZK(t, tls)
	_, port, _ := strings.Cut(s.SecureAddr(), ":")
	c, err := Dial(ctxT(t), tlsOptions(t, "localhost:"+port, Security{TLSCA: pki.CA}))
	if err != nil {
		t.Fatalf("dial localhost:%s with a certificate for localhost: %v", port, err)
	}
	defer c.Close()
	roundTrip(t, c)
	dialFails(t, tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA}), "doesn't contain any IP SANs")
}

// TestTLSClientCertificate: a server with ssl.clientAuth=need refuses a
// client without a certificate from its trust store and serves one with.
func TestTLSClientCertificate(t *testing.T) {
	pki := newPKI(t)
	s := startTLSZK(t, pki.TLS(zkserver.ClientAuthNeed))

	t.Run("without", func(t *testing.T) {
		dialFails(t, tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA}), "remote error: tls: bad certificate", "--zk-tls-cert")
	})
	t.Run("from another CA", func(t *testing.T) {
		// Go does not even send a certificate whose issuer is not among
		// the CAs the server asks for; either way the server says no.
		other := newPKI(t)
		dialFails(t, tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA, TLSCert: other.ClientCert, TLSKey: other.ClientKey}),
			"remote error: tls: bad certificate")
	})
	t.Run("with", func(t *testing.T) {
		c, err := Dial(ctxT(t), tlsOptions(t, s.SecureAddr(), Security{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c)
	})
}
