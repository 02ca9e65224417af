// Package sign signs and verifies HEAD: what every agent runs. A release
// engineer's ed25519 key (dcroll keygen) signs the spec id HEAD names and
// HEAD's sequence number (dcroll push --sign, dcroll rollback --sign);
// agents started with --trust KEY.pub accept only a HEAD signed by one of
// their keys, with a sequence number no lower than the highest they
// accepted. The spec id is the sha256 of the canonical spec, which names
// every blob by its sha256, so neither a tampered spec nor a tampered blob
// record can change what runs: agents check the spec's hash when loading
// it and every blob's hash after downloading it.
//
// The signed message is
//
//	dcroll HEAD v1\n
//	root <root znode>\n
//	spec <spec id>\n
//	seq <decimal>\n
//
// so that a HEAD signed for one data center (root) is not valid in another.
package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"

	"dcroll/znodes"
)

// Reasons a HEAD is refused; Verify's errors wrap one of them.
var (
	ErrUnsigned     = errors.New("HEAD is not signed")
	ErrUntrustedKey = errors.New("HEAD is signed by a key this agent does not trust")
	ErrBadSignature = errors.New("HEAD's signature does not verify")
	ErrReplayed     = errors.New("HEAD is older than one already accepted (replayed)")
)

// Message is the byte string a HEAD's signature covers.
func Message(root, specID string, seq uint64) []byte {
	return []byte("dcroll HEAD v1\nroot " + root + "\nspec " + specID + "\nseq " + strconv.FormatUint(seq, 10) + "\n")
}

// KeyID names a public key: the first 16 hex digits of its sha256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signer signs HEADs with one private key.
type Signer struct {
	key ed25519.PrivateKey
	id  string
}

// Sign returns the signature of HEAD (root, specID, seq).
func (s *Signer) Sign(root, specID string, seq uint64) *znodes.HeadSignature {
	return &znodes.HeadSignature{KeyID: s.id, Sig: ed25519.Sign(s.key, Message(root, specID, seq))}
}

// KeyID is the id of the signer's public key.
func (s *Signer) KeyID() string { return s.id }

// Verifier checks HEADs against trusted public keys.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier trusts keys.
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: map[string]ed25519.PublicKey{}}
	for _, k := range keys {
		v.keys[KeyID(k)] = k
	}
	return v
}

// LoadVerifier reads the public key files (KEY.pub) to trust.
func LoadVerifier(paths []string) (*Verifier, error) {
	var keys []ed25519.PublicKey
	for _, p := range paths {
		k, err := LoadPublic(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return NewVerifier(keys...), nil
}

// Verify checks that h is signed by a trusted key for root.
func (v *Verifier) Verify(root string, h *znodes.Head) error {
	if h.Signature == nil || len(h.Signature.Sig) == 0 {
		return fmt.Errorf("%w (spec %s, seq %d): push it with dcroll push --sign KEY", ErrUnsigned, short(h.SpecID), h.Seq)
	}
	k, ok := v.keys[h.Signature.KeyID]
	if !ok {
		return fmt.Errorf("%w: key %s (spec %s, seq %d); trusted: %s", ErrUntrustedKey, h.Signature.KeyID, short(h.SpecID), h.Seq, v.ids())
	}
	if !ed25519.Verify(k, Message(root, h.SpecID, h.Seq), h.Signature.Sig) {
		return fmt.Errorf("%w: key %s, spec %s, seq %d: HEAD was altered or signed for another root", ErrBadSignature, h.Signature.KeyID, short(h.SpecID), h.Seq)
	}
	return nil
}

func (v *Verifier) ids() string {
	s := ""
	for id := range v.keys {
		if s != "" {
			s += ","
		}
		s += id
	}
	if s == "" {
		return "none"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// GenerateKey writes a new ed25519 key pair: the private key to path
// (PKCS#8 PEM, mode 600; refused if path exists) and the public key to
// path + ".pub" (PKIX PEM). It returns the key id.
func GenerateKey(path string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
		typ  string
		der  []byte
	}{{path, 0o600, "PRIVATE KEY", der}, {path + ".pub", 0o644, "PUBLIC KEY", pubDER}} {
		out, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return "", fmt.Errorf("keygen: %w (keys are never overwritten: pick another path)", err)
		}
		if err := pem.Encode(out, &pem.Block{Type: f.typ, Bytes: f.der}); err != nil {
			out.Close()
			return "", fmt.Errorf("keygen: write %s: %w", f.path, err)
		}
		if err := out.Close(); err != nil {
			return "", fmt.Errorf("keygen: write %s: %w", f.path, err)
		}
	}
	return KeyID(pub), nil
}

// LoadSigner reads a private key written by GenerateKey. Like a
// credential file, it is refused when group or others may read it.
func LoadSigner(path string) (*Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s: mode %04o lets other users read it: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM private key (make one with dcroll keygen)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T is not an ed25519 key (make one with dcroll keygen)", path, k)
	}
	return &Signer{key: priv, id: KeyID(priv.Public().(ed25519.PublicKey))}, nil
}

// LoadPublic reads a public key written by GenerateKey (KEY.pub).
func LoadPublic(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trusted key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("trusted key %s: not a PEM public key (dcroll keygen writes KEY.pub)", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("trusted key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("trusted key %s: %T is not an ed25519 key", path, k)
	}
	return pub, nil
}
