package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dcroll/integration/zkserver"
	"dcroll/znodes"
)

// startTLSZK starts a real ZooKeeper with a secureClientPort for pki's
// server certificate, with the skeleton created over TLS. Without java or
// the ZooKeeper package it skips, unless CI is set.
func startTLSZK(t *testing.T, pki *zkserver.PKI, auth zkserver.ClientAuth) *zkserver.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real ZooKeeper: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := zkserver.Start(ctx, zkserver.Options{Dir: t.TempDir(), TLS: pki.TLS(auth)})
	if errors.Is(err, zkserver.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skipf("%v (set CI=1 to make this a failure)", err)
	}
	if err != nil {
		t.Fatalf("start zookeeper with TLS: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	o := znodes.Options{Servers: s.SecureAddr()}
	if err := (znodes.Security{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}).Apply(&o); err != nil {
		t.Fatal(err)
	}
	c, err := znodes.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	return s
}

func testPKI(t *testing.T) *zkserver.PKI {
	t.Helper()
	p, err := zkserver.NewTestPKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wantTLSFailure runs dcroll as a binary with args and checks it exits 1
// with one line that says ZooKeeper is unreachable and every one of why,
// within the timeout.
func wantTLSFailure(t *testing.T, args []string, why ...string) {
	t.Helper()
	start := time.Now()
	out := strings.TrimSpace(runBinary(t, 1, append([]string{"--zk-timeout=2s"}, args...)...))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("dcroll %v took %s to fail with --zk-timeout=2s", args, took)
	}
	if !strings.HasPrefix(out, "dcroll: ") || strings.Contains(out, "\n") || !strings.Contains(out, "unreachable") {
		t.Errorf("dcroll %v: output %q, want one line saying zookeeper is unreachable", args, out)
	}
	for _, w := range why {
		if !strings.Contains(out, w) {
			t.Errorf("dcroll %v: output %q does not say %q", args, out, w)
		}
	}
	t.Logf("dcroll %v: %s", args, out)
}

func TestCLIOverTLS(t *testing.T) {
	pki := testPKI(t)
	s := startTLSZK(t, pki, zkserver.ClientAuthNone)
	zkf := "--zk=" + s.SecureAddr()

	if out, errs, code := run(t, zkf, "--zk-tls-ca", pki.CA, "status"); code != 0 || !strings.Contains(out, "HEAD: none") {
		t.Fatalf("status over TLS: exit %d, %q, %q", code, out, errs)
	}
	t.Setenv("DCROLL_ZK_TLS_CA", pki.CA) // the same from the environment (agents' units use it)
	if out, errs, code := run(t, zkf, "status"); code != 0 || !strings.Contains(out, "HEAD: none") {
		t.Fatalf("status with DCROLL_ZK_TLS_CA: exit %d, %q, %q", code, out, errs)
	}
	unsetenv(t, "DCROLL_ZK_TLS_CA")

	wantTLSFailure(t, []string{zkf, "--zk-tls-ca", testPKI(t).CA, "status"}, "certificate signed by unknown authority", "--zk-tls-ca")
	wantTLSFailure(t, []string{zkf, "status"}, "if it is a TLS port (secureClientPort), connect with --zk-tls-ca")

	missing := filepath.Join(t.TempDir(), "nope.pem")
	if _, errs, code := run(t, zkf, "--zk-tls-ca", missing, "status"); code != 1 || !strings.Contains(errs, "zookeeper TLS CA") || !strings.Contains(errs, missing) {
		t.Errorf("a missing CA file: exit %d, %q; want 1 and the file named", code, errs)
	}
	if _, errs, code := run(t, zkf, "--zk-tls-cert", pki.ClientCert, "--zk-tls-key", pki.ClientKey, "status"); code != 1 || !strings.Contains(errs, "--zk-tls-ca") {
		t.Errorf("a client certificate without a CA: exit %d, %q; want 1 and --zk-tls-ca named", code, errs)
	}
}

func TestCLIOverTLSClientCertificate(t *testing.T) {
	pki := testPKI(t)
	s := startTLSZK(t, pki, zkserver.ClientAuthNeed)
	zkf := "--zk=" + s.SecureAddr()
	if out, errs, code := run(t, zkf, "--zk-tls-ca", pki.CA, "--zk-tls-cert", pki.ClientCert, "--zk-tls-key", pki.ClientKey, "status"); code != 0 || !strings.Contains(out, "HEAD: none") {
		t.Fatalf("status with a client certificate: exit %d, %q, %q", code, out, errs)
	}
	wantTLSFailure(t, []string{zkf, "--zk-tls-ca", pki.CA, "status"}, "tls: bad certificate", "--zk-tls-cert and --zk-tls-key")
}
