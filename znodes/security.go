package znodes

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
)

// Security is how a client proves who it is to ZooKeeper and protects
// the connection: digest credentials (a file, or the DCROLL_ZK_AUTH
// environment variable; never a command-line argument, which every user
// of the machine can read in ps) and TLS to the servers' secureClientPort.
// The zero Security is an anonymous plain-TCP client.
type Security struct {
	// AuthFile holds a digest credential on its first line, user:password.
	// It is refused when its group or others may read it.
	AuthFile string
	// Auth is a credential given directly (user:password), from the
	// environment.
	Auth string
	// TLSCA is the PEM bundle the servers' certificates must chain to;
	// setting it turns TLS on. TLSCert and TLSKey are the client's own
	// certificate and key (PEM), for servers that require one.
	TLSCA, TLSCert, TLSKey string
}

// EnvAuth is the environment variable a digest credential may come from.
const EnvAuth = "DCROLL_ZK_AUTH"

// Apply loads the credentials and TLS configuration into o.
func (s Security) Apply(o *Options) error {
	if s.AuthFile != "" {
		cred, err := ReadCredentialFile(s.AuthFile)
		if err != nil {
			return err
		}
		o.Auth = append(o.Auth, cred)
	}
	if s.Auth != "" {
		cred, err := ParseCredential(s.Auth)
		if err != nil {
			return fmt.Errorf("%s: %w", EnvAuth, err)
		}
		o.Auth = append(o.Auth, cred)
	}
	if s.TLSCA == "" {
		if s.TLSCert != "" || s.TLSKey != "" {
			return errors.New("zookeeper TLS: a client certificate needs --zk-tls-ca too (the CA the servers' certificates chain to)")
		}
		return nil
	}
	cfg, err := LoadTLS(s.TLSCA, s.TLSCert, s.TLSKey)
	if err != nil {
		return err
	}
	o.TLS = cfg
	return nil
}

// ReadCredentialFile reads a digest credential file: its first line is
// user:password. The file must not be readable by group or others.
func ReadCredentialFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("zookeeper credentials: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("zookeeper credentials %s: mode %04o lets other users read it: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("zookeeper credentials: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("zookeeper credentials %s: %w", path, err)
		}
		return "", fmt.Errorf("zookeeper credentials %s: empty; its first line must be user:password", path)
	}
	cred, err := ParseCredential(sc.Text())
	if err != nil {
		return "", fmt.Errorf("zookeeper credentials %s: %w", path, err)
	}
	return cred, nil
}

// ParseCredential checks a user:password digest credential.
func ParseCredential(s string) (string, error) {
	s = strings.TrimSpace(s)
	user, pass, ok := strings.Cut(s, ":")
	if !ok || user == "" || pass == "" {
		return "", errors.New("want user:password")
	}
	return s, nil
}

// LoadTLS builds the client TLS configuration: server certificates must
// chain to the CA bundle at ca and name the host dialed (no skip-verify);
// cert and key, when given, are the client's certificate for servers that
// require client authentication.
func LoadTLS(ca, cert, key string) (*tls.Config, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("zookeeper TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("zookeeper TLS CA %s: no PEM certificate in it", ca)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("zookeeper TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case cert != "" || key != "":
		return nil, errors.New("zookeeper TLS: give both --zk-tls-cert and --zk-tls-key, or neither")
	}
	return cfg, nil
}

// dialTLS wraps a dialed connection in TLS, verifying the server's
// certificate against the host name of address, within timeout.
func dialTLS(nc net.Conn, cfg *tls.Config, address string, timeout time.Duration) (net.Conn, error) {
	c := cfg.Clone()
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		c.ServerName = host
	}
	tc := tls.Client(nc, c)
	if err := tc.SetDeadline(time.Now().Add(timeout)); err != nil {
		nc.Close()
		return nil, err
	}
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("zookeeper TLS handshake with %s: %w (%s)", address, err, tlsFix(err))
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		tc.Close()
		return nil, err
	}
	return tc, nil
}

// tlsFix says what to do about a failed TLS connection to ZooKeeper.
func tlsFix(err error) string {
	var unknown x509.UnknownAuthorityError
	var name x509.HostnameError
	var invalid x509.CertificateInvalidError
	var remote *net.OpError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return "the server's certificate is not signed by a CA in --zk-tls-ca / zk_tls_ca: give the CA that issued the ZooKeeper servers' certificates"
	case errors.As(err, &name):
		return "the server's certificate does not name the host in --zk: connect by a name or address the certificate lists, or reissue it with that name"
	case errors.As(err, &invalid):
		return "the server's certificate is not valid (expired, not yet valid, or not for servers): reissue it"
	case errors.As(err, &remote) && remote.Op == "remote error" && strings.Contains(remote.Err.Error(), "certificate"):
		// The server's alert (bad certificate, certificate required,
		// unknown certificate authority) is about this client's.
		return "the server refused this client: it requires a client certificate signed by a CA in its ssl.trustStore (--zk-tls-cert and --zk-tls-key)"
	case errors.As(err, &remote) && remote.Op == "remote error":
		return "the server refused the handshake: compare its ssl.protocol and ssl.ciphersuites with this client's (TLS 1.2 or later)"
	case errors.As(err, &record), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return "the server does not speak TLS there: point --zk at its secureClientPort"
	}
	return "check --zk-tls-ca, --zk-tls-cert and --zk-tls-key against the servers' secureClientPort settings"
}

// namedHosts is a zk.HostProvider that keeps the host names of the
// connect string. go-zookeeper's default (DNSHostProvider) resolves every
// name to addresses before dialing, so the TLS dialer would see only
// 10.0.0.5:2281 and verify the certificate against that address; the
// usual certificate names zk1.example.com and would be refused. The names
// are dialed as given (net.Dial resolves them, trying every address).
type namedHosts struct {
	mu      sync.Mutex
	servers []string
	curr    int
	last    int
}

var _ zk.HostProvider = (*namedHosts)(nil)

func (h *namedHosts) Init(servers []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return err
		}
	}
	if len(servers) == 0 {
		return errors.New("no zookeeper servers")
	}
	// Shuffled like the default provider, so clients spread over servers.
	h.servers = slices.Clone(servers)
	rand.Shuffle(len(h.servers), func(i, j int) { h.servers[i], h.servers[j] = h.servers[j], h.servers[i] })
	h.curr, h.last = -1, -1
	return nil
}

func (h *namedHosts) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.servers)
}

// Next returns the next server; retryStart is true once every server was
// tried since the last connection (the library then waits a second).
func (h *namedHosts) Next() (server string, retryStart bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.curr = (h.curr + 1) % len(h.servers)
	retryStart = h.curr == h.last
	if h.last == -1 {
		h.last = 0
	}
	return h.servers[h.curr], retryStart
}

func (h *namedHosts) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = h.curr
}
