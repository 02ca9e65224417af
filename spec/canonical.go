package spec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// canonicalFile names canonical JSON in error messages.
const canonicalFile = "canonical spec"

// canonicalDoc is the canonical JSON document: the spec plus its schema.
type canonicalDoc struct {
	Schema   int                 `json:"schema"`
	Name     string              `json:"name"`
	Window   *Window             `json:"window,omitempty"`
	Services map[string]*Service `json:"services"`
}

// Canonical returns the canonical JSON form of s: compact, with "schema",
// defaults applied (see [Spec.ApplyDefaults]), depends_on sorted, map keys
// sorted, no HTML escaping. s itself is not modified. It is meant for
// validated specs; it never fails.
func (s *Spec) Canonical() []byte {
	c := s.Clone()
	c.ApplyDefaults()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(canonicalDoc{Schema: SchemaVersion, Name: c.Name, Window: c.Window, Services: c.Services}); err != nil {
		// Only possible if a custom marshaler failed; ours do not.
		panic(fmt.Sprintf("spec: canonical encoding: %v", err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// ID returns the content id of s: the lowercase hex sha256 of s.Canonical().
func (s *Spec) ID() string {
	sum := sha256.Sum256(s.Canonical())
	return hex.EncodeToString(sum[:])
}

// ShortID returns the first 12 characters of id (all of it if shorter),
// for logs and dashboards.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// FromCanonical decodes a spec stored in canonical JSON (or any JSON spec
// with a "schema" field), applies defaults and validates it. Unknown fields
// and a schema newer than [SchemaVersion] are errors.
func FromCanonical(b []byte) (*Spec, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var doc struct {
		Schema *int `json:"schema"`
		canonicalDoc
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, &ValidationError{File: canonicalFile, Msg: "malformed JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &ValidationError{File: canonicalFile, Msg: "malformed JSON: unexpected data after the spec"}
	}
	switch {
	case doc.Schema == nil:
		return nil, &ValidationError{File: canonicalFile, Field: "schema", Msg: "missing"}
	case *doc.Schema != SchemaVersion:
		return nil, &ValidationError{File: canonicalFile, Field: "schema", Msg: schemaMsg(*doc.Schema)}
	}
	s := &Spec{Name: doc.Name, Window: doc.Window, Services: doc.Services}
	s.ApplyDefaults()
	if err := s.validate(canonicalFile, nil); err != nil {
		return nil, err
	}
	return s, nil
}

func schemaMsg(v int) string {
	if v > SchemaVersion {
		return fmt.Sprintf("schema %d is newer than this dcroll understands (%d); upgrade dcroll", v, SchemaVersion)
	}
	return fmt.Sprintf("unsupported schema %d (this dcroll reads schema %d)", v, SchemaVersion)
}

// ErrAltered: a stored spec's content does not hash to its id.
var ErrAltered = errors.New("the stored spec was altered")

// FromStored decodes a stored spec (the canonical form at /dc/specs/id)
// and checks that it hashes to id: a spec altered in ZooKeeper is refused,
// never run. Every reader of stored specs uses it.
func FromStored(id string, b []byte) (*Spec, error) {
	sp, err := FromCanonical(b)
	if err != nil {
		return nil, fmt.Errorf("load spec %s: %w", ShortID(id), err)
	}
	if got := sp.ID(); got != id {
		return nil, fmt.Errorf("load spec %s: content hashes to %s: %w", ShortID(id), ShortID(got), ErrAltered)
	}
	return sp, nil
}
