package zkserver

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// nettyFactory is the connection factory ZooKeeper needs for TLS: the
// default NIO factory has no TLS, and a secureClientPort without Netty
// fails at start.
const nettyFactory = "org.apache.zookeeper.server.NettyServerCnxnFactory"

// ClientAuth is ZooKeeper's ssl.clientAuth: whether the secure port asks
// clients for a certificate signed by a CA in its trust store.
type ClientAuth string

const (
	// ClientAuthNone: no client certificate (clients authenticate with
	// digest credentials, if at all). The default of this package.
	ClientAuthNone ClientAuth = "none"
	// ClientAuthWant: a certificate is asked for and verified when given.
	ClientAuthWant ClientAuth = "want"
	// ClientAuthNeed: a client without a valid certificate is refused in
	// the handshake. ZooKeeper's own default when ssl.clientAuth is unset.
	ClientAuthNeed ClientAuth = "need"
)

// TLS configures a server's secureClientPort. Key and trust stores are
// files ZooKeeper reads itself (ssl.keyStore.*, ssl.trustStore.*): PEM (a
// private key and its certificate chain in one file; certificates for the
// trust store), PKCS12 or JKS. NewTestPKI makes PEM ones, and PKCS12 ones
// with keytool.
type TLS struct {
	// KeyStore holds the server's private key and certificate chain.
	// Required.
	KeyStore string
	// KeyStorePassword protects KeyStore ("" for an unencrypted PEM key).
	KeyStorePassword string
	// TrustStore holds the CAs client certificates must chain to. Required
	// (ZooKeeper builds its trust manager even with ClientAuthNone).
	TrustStore string
	// TrustStorePassword protects TrustStore ("" for PEM).
	TrustStorePassword string
	// StoreType is ssl.keyStore.type and ssl.trustStore.type: "PEM",
	// "PKCS12" or "JKS"; "" derives it from KeyStore's extension
	// (.pem/.crt, .p12/.pfx/.pkcs12, .jks). It is always written out, so
	// ZooKeeper does not guess from the file name itself.
	StoreType string
	// ClientAuth is ssl.clientAuth (default ClientAuthNone).
	ClientAuth ClientAuth
	// Quorum also encrypts the traffic between ensemble members
	// (sslQuorum) with the same stores: every member's certificate must
	// then be good for client and server authentication and chain to a
	// CA in TrustStore, as NewTestPKI's is. Ignored by a standalone server.
	Quorum bool
}

// withDefaults validates and fills in StoreType and ClientAuth; paths are
// made absolute because the JVM runs in the server's directory.
func (t TLS) withDefaults() (TLS, error) {
	if t.KeyStore == "" || t.TrustStore == "" {
		return t, errors.New("zkserver: TLS needs KeyStore and TrustStore (see NewTestPKI)")
	}
	for _, p := range []*string{&t.KeyStore, &t.TrustStore} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return t, fmt.Errorf("zkserver: TLS store: %w", err)
		}
		*p = abs
	}
	if t.StoreType == "" {
		switch strings.ToLower(filepath.Ext(t.KeyStore)) {
		case ".pem", ".crt":
			t.StoreType = "PEM"
		case ".p12", ".pfx", ".pkcs12":
			t.StoreType = "PKCS12"
		case ".jks":
			t.StoreType = "JKS"
		default:
			return t, fmt.Errorf("zkserver: TLS key store %s: set StoreType (PEM, PKCS12 or JKS); the extension does not say", t.KeyStore)
		}
	}
	switch t.StoreType = strings.ToUpper(t.StoreType); t.StoreType {
	case "PEM", "PKCS12", "JKS":
	default:
		return t, fmt.Errorf("zkserver: TLS StoreType %q: want PEM, PKCS12 or JKS", t.StoreType)
	}
	if t.ClientAuth == "" {
		t.ClientAuth = ClientAuthNone
	}
	switch t.ClientAuth {
	case ClientAuthNone, ClientAuthWant, ClientAuthNeed:
	default:
		return t, fmt.Errorf("zkserver: TLS ClientAuth %q: want none, want or need", t.ClientAuth)
	}
	return t, nil
}

// zooCfg writes the secure port's lines of zoo.cfg. ZooKeeper copies every
// key it does not know itself into a system property "zookeeper.<key>",
// which is where its X509Util reads ssl.* from.
func (t *TLS) zooCfg(w func(k string, v any), securePort int) {
	w("secureClientPort", securePort)
	w("secureClientPortAddress", "127.0.0.1")
	w("serverCnxnFactory", nettyFactory)
	t.stores(w, "ssl.")
	// Spelled out: ZooKeeper's default is need, which would refuse every
	// client without a certificate.
	w("ssl.clientAuth", string(t.ClientAuth))
	// With ssl.hostnameVerification (on by default) the server would also
	// match a client certificate's names against the address the client
	// connects from; client certificates name identities, not hosts. The
	// clients verify the server's name themselves (znodes.LoadTLS).
	w("ssl.hostnameVerification", false)
}

// stores writes the key and trust store settings under prefix ("ssl." for
// clients, "ssl.quorum." between members).
func (t *TLS) stores(w func(k string, v any), prefix string) {
	for _, st := range []struct{ name, location, password string }{
		{"keyStore", t.KeyStore, t.KeyStorePassword}, {"trustStore", t.TrustStore, t.TrustStorePassword},
	} {
		w(prefix+st.name+".location", st.location)
		if st.password != "" {
			w(prefix+st.name+".password", st.password)
		}
		w(prefix+st.name+".type", t.StoreType)
	}
}

// quorumCfg writes sslQuorum and its stores: the members authenticate each
// other both ways with the same key store (ssl.quorum.clientAuth is need).
func (t *TLS) quorumCfg(w func(k string, v any)) {
	w("sslQuorum", true)
	t.stores(w, "ssl.quorum.")
	// Members dial each other at 127.0.0.1, which the certificates list,
	// but a member's certificate is also checked against the address it
	// connects from; on loopback that is 127.0.0.1 too, so both checks stay.
	w("ssl.quorum.hostnameVerification", true)
}
