package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxSize is the largest spec file Parse accepts.
const MaxSize = 1 << 20

// maxNodes bounds the work spent walking a document, aliases included.
const maxNodes = 200_000

// Load reads and parses the spec file at path (see [Parse]).
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a spec from YAML (or JSON, which is YAML), strictly: unknown
// fields, duplicate keys, wrong types and more than one document are errors.
// It applies defaults and validates. filename only labels error messages.
// Every problem found is reported; the error is a [*ValidationError].
//
// YAML anchors and aliases are resolved; merge keys ("<<") are not supported.
func Parse(filename string, data []byte) (*Spec, error) {
	if len(data) > MaxSize {
		return nil, &ValidationError{File: filename, Msg: fmt.Sprintf("file is %d bytes; a spec may be at most %d", len(data), MaxSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ValidationError{File: filename, Msg: "empty spec; expected a mapping with name and services"}
		}
		return nil, yamlError(filename, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(filename, err)
		}
		return nil, &ValidationError{File: filename, Line: extra.Line, Msg: "more than one YAML document; a spec file holds exactly one"}
	}
	d := &decoder{file: filename, pos: map[string]int{}}
	s := d.spec(&doc)
	if len(d.errs) > 0 {
		return nil, joinErrors(d.errs)
	}
	s.ApplyDefaults()
	if err := s.validate(filename, d.pos); err != nil {
		return nil, err
	}
	return s, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a yaml.v3 syntax error into a one-line ValidationError.
func yamlError(file string, err error) error {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ValidationError{File: file, Line: line, Msg: "malformed YAML: " + m[2]}
	}
	return &ValidationError{File: file, Msg: "malformed YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decoder builds a Spec from a yaml.Node tree, checking shapes (mapping,
// list, scalar), field names and scalar syntax, and recording the line of
// every field path for later validation messages.
type decoder struct {
	file  string
	errs  []*ValidationError
	pos   map[string]int // field path -> line
	nodes int
}

func (d *decoder) errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &ValidationError{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// resolve follows aliases and counts nodes; it returns nil when the budget
// is exhausted (after reporting it once).
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return nil
	}
	d.nodes++
	if d.nodes == maxNodes {
		d.errorf(n, "", "document too large (more than %d nodes after expanding aliases)", maxNodes)
	}
	if d.nodes >= maxNodes {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// fields iterates over a mapping, reporting non-scalar, duplicate and
// unknown keys (known == nil accepts any key). Null values are skipped,
// i.e. treated as absent.
func (d *decoder) fields(n *yaml.Node, path string, known []string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), d.resolve(n.Content[i+1])
		if k == nil || v == nil {
			return
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "mapping keys must be strings, got %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorf(k, path, "merge keys (<<) are not supported; write the fields out")
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			d.errorf(k, path, "%q is defined twice (first at line %d)", k.Value, prev)
			continue
		}
		seen[k.Value] = k.Line
		if known != nil && !contains(known, k.Value) {
			d.errorf(k, path, "unknown field %q (%s)", k.Value, suggest(k.Value, known))
			continue
		}
		if isNull(v) {
			continue
		}
		fn(k.Value, k, v)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *decoder) mapping(n *yaml.Node, path, what string) bool {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping (%s), got %s", what, kindName(n))
		return false
	}
	return true
}

func (d *decoder) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a string, got %s", kindName(n))
		return ""
	}
	return n.Value
}

func (d *decoder) strList(n *yaml.Node, path, example string) []string {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list of strings such as %s, got %s", example, kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		e = d.resolve(e)
		if e == nil {
			return out
		}
		if e.Kind != yaml.ScalarNode || isNull(e) {
			d.errorf(e, path, "item %d: expected a string, got %s", i+1, kindName(e))
			continue
		}
		d.pos[fmt.Sprintf("%s[%d]", path, len(out))] = e.Line
		out = append(out, e.Value)
	}
	return out
}

func (d *decoder) integer(n *yaml.Node, path string) (int, bool) {
	var v int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		d.errorf(n, path, "expected a whole number, got %s", kindName(n))
		return 0, false
	}
	return v, true
}

func (d *decoder) duration(n *yaml.Node, path string) Duration {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a duration such as \"5s\", got %s", kindName(n))
		return Duration{}
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return Duration{}
	}
	if v <= 0 {
		d.errorf(n, path, "%q must be positive (omit the field for the default)", n.Value)
	}
	return Duration{v}
}

var (
	topFields     = []string{"schema", "name", "window", "services"}
	windowFields  = []string{"start", "end", "timezone"}
	serviceFields = []string{"version", "artifact", "data", "run", "health", "quorum", "max_parallel", "settings", "reload_signal", "depends_on", "progress_deadline", "canary", "domain", "waves"}
	canaryFields  = []string{"machines", "bake"}
	healthFields  = []string{"http", "tcp", "command", "timeout", "min_healthy", "deadline"}
)

func (d *decoder) spec(doc *yaml.Node) *Spec {
	s := &Spec{}
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	root = d.resolve(root)
	if root == nil || isNull(root) {
		d.errorf(root, "", "empty spec; expected a mapping with name and services")
		return s
	}
	if !d.mapping(root, "", "name, window, services") {
		return s
	}
	servicesSeen := false
	d.fields(root, "", topFields, func(key string, k, v *yaml.Node) {
		d.pos[key] = k.Line
		switch key {
		case "schema":
			if n, ok := d.integer(v, key); ok && n != SchemaVersion {
				d.errorf(v, key, "%s", schemaMsg(n))
			}
		case "name":
			s.Name = d.str(v, key)
		case "window":
			s.Window = d.window(v)
		case "services":
			servicesSeen = true
			s.Services = d.services(v)
		}
	})
	if !servicesSeen && len(d.errs) == 0 {
		d.errorf(root, "services", "missing; a spec needs at least one service")
	}
	return s
}

func (d *decoder) window(n *yaml.Node) *Window {
	w := &Window{}
	if !d.mapping(n, "window", `start: "01:00", end: "05:00", timezone: "Europe/Paris"`) {
		return w
	}
	d.pos["window"] = n.Line
	d.fields(n, "window", windowFields, func(key string, k, v *yaml.Node) {
		path := "window." + key
		d.pos[path] = v.Line
		val := d.str(v, path)
		switch key {
		case "start":
			w.Start = val
		case "end":
			w.End = val
		case "timezone":
			w.Timezone = val
		}
	})
	return w
}

func (d *decoder) services(n *yaml.Node) map[string]*Service {
	out := map[string]*Service{}
	if !d.mapping(n, "services", "service name -> service") {
		return out
	}
	d.fields(n, "services", nil, func(name string, k, v *yaml.Node) {
		path := "services." + name
		d.pos[path] = k.Line
		out[name] = d.service(v, path)
	})
	return out
}

func (d *decoder) service(n *yaml.Node, path string) *Service {
	svc := &Service{Quorum: Quorum{Count: DefaultQuorum}}
	if !d.mapping(n, path, "version, artifact, run, ...") {
		return svc
	}
	d.fields(n, path, serviceFields, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		d.pos[p] = v.Line
		switch key {
		case "version":
			svc.Version = d.str(v, p)
		case "artifact":
			svc.Artifact = d.str(v, p)
		case "data":
			svc.Data = d.strList(v, p, `["sha256:..."]`)
		case "run":
			svc.Run = d.strList(v, p, `["./server", "--port", "7001"]`)
		case "health":
			svc.Health = d.health(v, p)
		case "quorum":
			q, err := decodeQuorum(v)
			if err != nil {
				d.errorf(v, p, "%v", err)
			}
			svc.Quorum = q
		case "max_parallel":
			n, ok := d.integer(v, p)
			svc.MaxParallel = n
			if ok && n < 1 {
				d.errorf(v, p, "must be at least 1, got %s", v.Value)
			}
		case "settings":
			svc.Settings = d.settings(v, p)
		case "reload_signal":
			svc.ReloadSignal = d.str(v, p)
			if svc.ReloadSignal == "" {
				d.errorf(v, p, "empty; omit the field for the default (%s)", DefaultReloadSignal)
			}
		case "depends_on":
			svc.DependsOn = d.strList(v, p, `["db"]`)
		case "progress_deadline":
			svc.ProgressDeadline = d.duration(v, p)
		case "canary":
			svc.Canary = d.canary(v, p)
		case "domain":
			svc.Domain = d.str(v, p)
			if v.Kind == yaml.ScalarNode && svc.Domain == "" {
				d.errorf(v, p, "empty; name an agent label such as \"rack\" (or omit the field: one rack at a time)")
			}
		case "waves":
			svc.Waves = d.waves(v, p)
		}
	})
	return svc
}

// waves reads `waves: dc` or `waves: [dc-east, dc-west]`.
func (d *decoder) waves(n *yaml.Node, path string) *Waves {
	switch {
	case n.Kind == yaml.SequenceNode:
		return &Waves{Order: d.strList(n, path, `["dc-east", "dc-west"]`)}
	case n.Kind == yaml.ScalarNode && n.Value == WavesByDC:
		return &Waves{}
	case n.Kind == yaml.ScalarNode:
		hint := `write "dc" (every data center, by name) or a list of data centers such as [dc-east, dc-west]`
		if editDistance(strings.ToLower(n.Value), WavesByDC) <= 1 || strings.EqualFold(n.Value, "dcs") {
			hint = `did you mean "dc"?`
		}
		d.errorf(n, path, "%q is not a wave order (%s)", n.Value, hint)
	default:
		d.errorf(n, path, `expected "dc" or a list of data centers such as [dc-east, dc-west], got %s`, kindName(n))
	}
	return &Waves{}
}

func (d *decoder) canary(n *yaml.Node, path string) *Canary {
	c := &Canary{}
	if !d.mapping(n, path, `machines: 1, bake: 10m`) {
		return c
	}
	d.fields(n, path, canaryFields, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		d.pos[p] = v.Line
		switch key {
		case "machines":
			c.Machines, _ = d.integer(v, p)
		case "bake":
			c.Bake = d.duration(v, p)
		}
	})
	return c
}

func (d *decoder) health(n *yaml.Node, path string) *Health {
	h := &Health{}
	if !d.mapping(n, path, `exactly one of http, tcp or command, plus timeout, min_healthy, deadline`) {
		return h
	}
	d.fields(n, path, healthFields, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		d.pos[p] = v.Line
		switch key {
		case "http":
			h.HTTP = d.str(v, p)
		case "tcp":
			h.TCP = d.str(v, p)
		case "command":
			h.Command = d.strList(v, p, `["./check"]`)
		case "timeout":
			h.Timeout = d.duration(v, p)
		case "min_healthy":
			h.MinHealthy = d.duration(v, p)
		case "deadline":
			h.Deadline = d.duration(v, p)
		}
	})
	return h
}

func (d *decoder) settings(n *yaml.Node, path string) map[string]string {
	out := map[string]string{}
	if !d.mapping(n, path, "name -> string value") {
		return out
	}
	// Null values are reported, not skipped: fields() skips them, so look first.
	for i := 1; i < len(n.Content); i += 2 {
		if v := n.Content[i]; isNull(v) {
			d.errorf(v, path, "%q has no value; write \"\" for an empty string", n.Content[i-1].Value)
		}
	}
	d.fields(n, path, nil, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		d.pos[p] = v.Line
		out[key] = d.str(v, p)
	})
	return out
}

// suggest returns "did you mean ...?" for a near miss, else the known list.
func suggest(got string, known []string) string { return Suggest(got, known, "known") }

// Suggest returns `did you mean "x"?` for a near miss of got among known
// (edit distance at most 2), else "what: a, b, c". One rule for every
// "did you mean" of dcroll (spec fields, machine and service names).
func Suggest(got string, known []string, what string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(got, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return what + ": " + strings.Join(known, ", ")
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
