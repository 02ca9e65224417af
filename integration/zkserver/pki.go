package zkserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PKI is a throwaway certificate authority and the files a TLS server and
// its clients need, made by NewTestPKI for tests and the local demo. Every
// path is absolute; keys are written with mode 0600.
type PKI struct {
	// Dir holds every file below.
	Dir string
	// CA is the CA certificate (PEM): what clients trust (--zk-tls-ca,
	// zk_tls_ca) and the server's trust store for client certificates.
	CA string
	// ServerKeyStore is the server's key store in PEM (ZooKeeper's
	// ssl.keyStore.type=PEM): its private key, then its certificate for
	// IP 127.0.0.1 and DNS localhost, then the CA certificate.
	ServerKeyStore string
	// ClientCert and ClientKey are a client certificate (CN "dcroll-client")
	// and its key, PEM, for servers started with ClientAuthNeed
	// (--zk-tls-cert, --zk-tls-key).
	ClientCert, ClientKey string

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// certValidity is long enough for any test or demo, and the CA is
// backdated an hour so that a clock slightly behind does not matter.
const certValidity = 30 * 24 * time.Hour

// NewTestPKI creates dir (if needed) and writes a new CA (ca.pem), a
// server key store for 127.0.0.1 and localhost (server.pem) and a client
// certificate (client.pem, client-key.pem) into it. It needs no tool:
// ZooKeeper 3.8 reads PEM key and trust stores. KeytoolStores makes the
// same server identity as PKCS12 stores with keytool.
func NewTestPKI(dir string) (*PKI, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("zkserver PKI: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("zkserver PKI: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("zkserver PKI: %w", err)
	}
	now, sn := time.Now(), serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		// A name of its own: Go's errors name the CA they tried, and
		// tests use several CAs.
		Subject:               pkix.Name{CommonName: fmt.Sprintf("dcroll test CA %x", sn.Bytes()[:4])},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("zkserver PKI: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("zkserver PKI: CA certificate: %w", err)
	}
	p := &PKI{Dir: dir, CA: filepath.Join(dir, "ca.pem"), caCert: ca, caKey: key}
	if err := os.WriteFile(p.CA, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return nil, fmt.Errorf("zkserver PKI: %w", err)
	}
	if p.ServerKeyStore, err = p.IssueServer("server", "127.0.0.1", "localhost"); err != nil {
		return nil, err
	}
	if p.ClientCert, p.ClientKey, err = p.IssueClient("client"); err != nil {
		return nil, err
	}
	return p, nil
}

// TLS is the server configuration for this PKI's PEM stores.
func (p *PKI) TLS(auth ClientAuth) *TLS {
	return &TLS{KeyStore: p.ServerKeyStore, TrustStore: p.CA, StoreType: "PEM", ClientAuth: auth}
}

// IssueServer writes Dir/<name>.pem, a PEM key store (key, certificate,
// CA) for a server certificate naming hosts (IP addresses or DNS names),
// and returns its path. A certificate for other names than the one a
// client dials is how tests check host-name verification.
func (p *PKI) IssueServer(name string, hosts ...string) (string, error) {
	if len(hosts) == 0 {
		return "", errors.New("zkserver PKI: a server certificate needs at least one host")
	}
	certPEM, keyPEM, err := p.sign(p.serverLeaf(hosts))
	if err != nil {
		return "", fmt.Errorf("zkserver PKI: server certificate %s: %w", name, err)
	}
	caPEM, err := os.ReadFile(p.CA)
	if err != nil {
		return "", fmt.Errorf("zkserver PKI: %w", err)
	}
	// ZooKeeper's PEM key store: the (unencrypted PKCS#8) key and the chain
	// in one file; its loader takes the first key and every certificate.
	path := filepath.Join(p.Dir, name+".pem")
	store := append(append(keyPEM, certPEM...), caPEM...)
	if err := os.WriteFile(path, store, 0o600); err != nil {
		return "", fmt.Errorf("zkserver PKI: %w", err)
	}
	return path, nil
}

// IssueClient writes a client certificate (CN name) and its key as
// Dir/<name>.pem and Dir/<name>-key.pem and returns their paths.
func (p *PKI) IssueClient(name string) (cert, key string, err error) {
	certPEM, keyPEM, err := p.sign(p.leaf(name, x509.ExtKeyUsageClientAuth))
	if err != nil {
		return "", "", fmt.Errorf("zkserver PKI: client certificate %s: %w", name, err)
	}
	cert, key = filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("zkserver PKI: %w", err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("zkserver PKI: %w", err)
	}
	return cert, key, nil
}

func (p *PKI) leaf(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

// serverLeaf is a server certificate template naming hosts: IP addresses
// and DNS names as subject alternative names, which is all TLS clients
// check (the common name is only for people).
func (p *PKI) serverLeaf(hosts []string) *x509.Certificate {
	tmpl := p.leaf(hosts[0], x509.ExtKeyUsageServerAuth)
	// Ensemble members also dial each other with it (TLS.Quorum).
	tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// sign makes a key for tmpl and signs it with the CA.
func (p *PKI) sign(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", pkcs8), nil
}

// KeytoolStores makes PKCS12 key and trust stores with keytool (Java's,
// next to the java executable or in PATH) for a server certificate naming
// hosts, signed by this CA: keytool generates the key pair and a signing
// request, this CA signs it, keytool imports the chain. It returns the
// server configuration using them (password "changeit" for both stores),
// for servers that must run with Java's own store formats.
func (p *PKI) KeytoolStores(name string, auth ClientAuth, hosts ...string) (*TLS, error) {
	if len(hosts) == 0 {
		return nil, errors.New("zkserver PKI: a server certificate needs at least one host")
	}
	keytool, err := exec.LookPath("keytool")
	if err != nil {
		return nil, fmt.Errorf("zkserver PKI: %w (keytool comes with Java: apt-get install -y openjdk-17-jre-headless)", err)
	}
	const pass = "changeit"
	t := &TLS{
		KeyStore:           filepath.Join(p.Dir, name+".p12"),
		KeyStorePassword:   pass,
		TrustStore:         filepath.Join(p.Dir, name+"-trust.p12"),
		TrustStorePassword: pass,
		StoreType:          "PKCS12",
		ClientAuth:         auth,
	}
	csr := filepath.Join(p.Dir, name+".csr")
	signed := filepath.Join(p.Dir, name+"-chain.pem")
	for _, f := range []string{t.KeyStore, t.TrustStore} {
		os.Remove(f) // keytool adds to an existing store and refuses a taken alias
	}
	run := func(args ...string) error {
		out, err := exec.Command(keytool, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("zkserver PKI: keytool %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	store := []string{"-keystore", t.KeyStore, "-storetype", "PKCS12", "-storepass", pass, "-noprompt"}
	if err := run(append([]string{"-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1",
		"-dname", "CN=" + hosts[0], "-validity", "30"}, store...)...); err != nil {
		return nil, err
	}
	if err := run(append([]string{"-certreq", "-alias", name, "-file", csr}, store...)...); err != nil {
		return nil, err
	}
	if err := p.signRequest(csr, signed, hosts); err != nil {
		return nil, err
	}
	if err := run(append([]string{"-importcert", "-alias", "ca", "-file", p.CA}, store...)...); err != nil {
		return nil, err
	}
	if err := run(append([]string{"-importcert", "-alias", name, "-file", signed}, store...)...); err != nil {
		return nil, err
	}
	if err := run("-importcert", "-alias", "ca", "-file", p.CA,
		"-keystore", t.TrustStore, "-storetype", "PKCS12", "-storepass", pass, "-noprompt"); err != nil {
		return nil, err
	}
	return t, nil
}

// signRequest signs the PEM certificate request in csrPath for hosts (the
// names come from here, not from the request) and writes the certificate
// followed by the CA's to out, the chain keytool -importcert expects.
func (p *PKI) signRequest(csrPath, out string, hosts []string) error {
	b, err := os.ReadFile(csrPath)
	if err != nil {
		return fmt.Errorf("zkserver PKI: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("zkserver PKI: %s: no PEM certificate request", csrPath)
	}
	req, err := x509.ParseCertificateRequest(blk.Bytes)
	if err == nil {
		err = req.CheckSignature()
	}
	if err != nil {
		return fmt.Errorf("zkserver PKI: %s: %w", csrPath, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, p.serverLeaf(hosts), p.caCert, req.PublicKey, p.caKey)
	if err != nil {
		return fmt.Errorf("zkserver PKI: sign %s: %w", csrPath, err)
	}
	chain := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", p.caCert.Raw)...)
	if err := os.WriteFile(out, chain, 0o644); err != nil {
		return fmt.Errorf("zkserver PKI: %w", err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
