package spec

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidationError is one problem in a spec, as a one-line message:
//
//	spec.yaml:7: services.api.depends_on: unknown service "dbx" (known: cache, db)
//
// Parse and Validate collect every problem they find: the first is the
// error itself, the others are in More.
type ValidationError struct {
	File  string // file name as given to Parse; may be empty
	Line  int    // 1-based line in File; 0 when unknown
	Field string // dotted field path, e.g. "services.api.depends_on"; may be empty
	Msg   string // what is wrong, and the fix where obvious
	Err   error  // underlying cause, if any (e.g. a *CycleError)

	More []*ValidationError // further problems, in document order
}

// Error returns "file:line: field: msg", plus "(and N more problems)".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(e.one())
	if n := len(e.More); n == 1 {
		b.WriteString(" (and 1 more problem)")
	} else if n > 1 {
		fmt.Fprintf(&b, " (and %d more problems)", n)
	}
	return b.String()
}

func (e *ValidationError) one() string {
	var parts []string
	loc := e.File
	if e.Line > 0 {
		if loc == "" {
			loc = "line"
		}
		loc += ":" + strconv.Itoa(e.Line)
	}
	if loc != "" {
		parts = append(parts, loc)
	}
	if e.Field != "" {
		parts = append(parts, e.Field)
	}
	parts = append(parts, e.Msg)
	return strings.Join(parts, ": ")
}

// Unwrap returns the underlying cause, if any.
func (e *ValidationError) Unwrap() error { return e.Err }

// All returns this problem and the further ones, each without More, for
// printing one per line.
func (e *ValidationError) All() []*ValidationError {
	first := *e
	first.More = nil
	return append([]*ValidationError{&first}, e.More...)
}

// joinErrors orders problems by line (unknown lines last, stably) and
// returns the first carrying the others, or nil.
func joinErrors(errs []*ValidationError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].Line, errs[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	first := *errs[0]
	first.More = errs[1:]
	return &first
}

// Validate checks s as Parse does after decoding (without line numbers).
// Defaults are not applied: call ApplyDefaults first for a hand-built spec.
func (s *Spec) Validate() error { return s.validate("", nil) }

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	blobRE        = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	hexRE         = regexp.MustCompile(`^(?i:[0-9a-f]{64})$`)
)

// Signals are the accepted reload_signal values.
var Signals = []string{"SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH", "SIGCONT", "SIGALRM"}

// validator collects problems, finding lines through pos (field path ->
// line, recorded by the decoder); a missing path falls back to its parent.
type validator struct {
	file string
	pos  map[string]int
	errs []*ValidationError
}

func (v *validator) line(path string) int {
	for path != "" {
		if l, ok := v.pos[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// add reports a problem at field; at, if set, is a more precise path for
// the line (e.g. a list item "services.db.data[2]").
func (v *validator) add(field, at string, err error, format string, args ...any) {
	if at == "" {
		at = field
	}
	v.errs = append(v.errs, &ValidationError{File: v.file, Line: v.line(at), Field: field, Msg: fmt.Sprintf(format, args...), Err: err})
}

func item(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func (s *Spec) validate(file string, pos map[string]int) error {
	v := &validator{file: file, pos: pos}
	if strings.TrimSpace(s.Name) == "" {
		v.add("name", "", nil, "missing; give the spec a label such as \"nightly-2026-11-22\"")
	} else if msg := badText(s.Name); msg != "" {
		v.add("name", "", nil, "%q %s", s.Name, msg)
	} else if len(s.Name) > 200 {
		v.add("name", "", nil, "too long (%d bytes, at most 200)", len(s.Name))
	}
	if s.Window != nil {
		v.window(s.Window)
	}
	if len(s.Services) == 0 {
		v.add("services", "", nil, "no services; a spec needs at least one")
	}
	names := s.Names()
	for _, name := range names {
		v.service(s, name)
	}
	if len(v.errs) == 0 {
		if _, err := s.Order(); err != nil {
			var ce *CycleError
			if errors.As(err, &ce) {
				field := "services." + ce.Cycle[0] + ".depends_on"
				v.add(field, "", ce, "%s (remove one of these dependencies)", ce.Error())
			} else {
				v.add("services", "", err, "%v", err)
			}
		}
	}
	return joinErrors(v.errs)
}

func (v *validator) window(w *Window) {
	start, errS := parseClock(w.Start)
	if errS != nil {
		v.add("window.start", "", nil, "%v", errS)
	}
	end, errE := parseClock(w.End)
	if errE != nil {
		v.add("window.end", "", nil, "%v", errE)
	}
	if errS == nil && errE == nil && start == end {
		v.add("window.end", "", nil, "equals start (%s); remove the window to allow rollouts at any time", w.Start)
	}
	if _, err := loadLocation(w.Timezone); err != nil {
		v.add("window.timezone", "", nil, "%v", err)
	}
}

func (v *validator) service(s *Spec, name string) {
	path := "services." + name
	if !serviceNameRE.MatchString(name) {
		v.add(path, "", nil, "invalid service name %q: use 1-63 characters a-z, 0-9, '_' or '-', starting with a letter or digit", name)
	}
	svc := s.Services[name]
	if svc == nil {
		v.add(path, "", nil, "missing definition; a service needs at least version, artifact and run")
		return
	}
	switch p := path + ".version"; {
	case svc.Version == "":
		v.add(p, "", nil, "missing; e.g. version: \"5.1.0\"")
	case strings.Contains(svc.Version, "/"):
		v.add(p, "", nil, "%q must not contain \"/\"", svc.Version)
	case svc.Version == "." || svc.Version == "..":
		v.add(p, "", nil, "%q is not a usable version", svc.Version)
	case strings.TrimSpace(svc.Version) != svc.Version:
		v.add(p, "", nil, "%q has leading or trailing spaces", svc.Version)
	case len(svc.Version) > 128:
		v.add(p, "", nil, "too long (%d bytes, at most 128)", len(svc.Version))
	default:
		if msg := badText(svc.Version); msg != "" {
			v.add(p, "", nil, "%q %s", svc.Version, msg)
		}
	}
	if svc.Artifact == "" {
		v.add(path+".artifact", "", nil, "missing; the service's code blob, \"sha256:<64 hex digits>\"")
	} else if msg := badBlob(svc.Artifact); msg != "" {
		v.add(path+".artifact", "", nil, "%s", msg)
	}
	seenData := map[string]bool{}
	for i, b := range svc.Data {
		p := path + ".data"
		if msg := badBlob(b); msg != "" {
			v.add(p, item(p, i), nil, "%s", msg)
		} else if seenData[b] {
			v.add(p, item(p, i), nil, "%q is listed twice", b)
		}
		seenData[b] = true
	}
	v.command(path+".run", svc.Run, "./server")
	if svc.Health != nil {
		v.health(path+".health", svc.Health)
	}
	switch q, p := svc.Quorum, path+".quorum"; {
	case q.Count != 0 && q.Percent != 0:
		v.add(p, "", nil, "set either a number of machines or a percentage, not both")
	case q.Percent < 0 || q.Percent > 100:
		v.add(p, "", nil, "%q is not a percentage between 0%% and 100%%", q.String())
	case q.Count < 0:
		v.add(p, "", nil, "%d: must be 0 or more machines", q.Count)
	}
	if svc.ProgressDeadline.Duration < 0 {
		v.add(path+".progress_deadline", "", nil, "%s must be positive (omit the field for the default, %s)", svc.ProgressDeadline, DefaultProgressDeadline)
	}
	if c := svc.Canary; c != nil {
		if c.Machines < 1 {
			v.add(path+".canary.machines", "", nil, "must be at least 1, got %d (omit canary for none)", c.Machines)
		}
		if c.Bake.Duration < 0 {
			v.add(path+".canary.bake", "", nil, "%s must not be negative (omit it to wait for dcroll promote)", c.Bake)
		}
	}
	if svc.MaxParallel < 1 {
		v.add(path+".max_parallel", "", nil, "must be at least 1, got %d", svc.MaxParallel)
	}
	v.domains(path, svc)
	for _, k := range sortedKeys(svc.Settings) {
		p := path + ".settings"
		if k == "" {
			v.add(p, "", nil, "empty setting name")
		} else if msg := badText(k); msg != "" {
			v.add(p, p+"."+k, nil, "name %q %s", k, msg)
		} else if msg := badValue(svc.Settings[k]); msg != "" {
			v.add(p+"."+k, "", nil, "value %s", msg)
		}
	}
	if !contains(Signals, svc.ReloadSignal) {
		hint := "known: " + strings.Join(Signals, ", ")
		if up := "SIG" + strings.TrimPrefix(strings.ToUpper(svc.ReloadSignal), "SIG"); contains(Signals, up) {
			hint = fmt.Sprintf("did you mean %q?", up)
		}
		v.add(path+".reload_signal", "", nil, "unknown signal %q (%s)", svc.ReloadSignal, hint)
	}
	seenDep := map[string]bool{}
	for i, dep := range svc.DependsOn {
		p := path + ".depends_on"
		switch _, ok := s.Services[dep]; {
		case dep == name:
			v.add(p, item(p, i), nil, "%q depends on itself; remove it", dep)
		case !ok:
			others := slices.DeleteFunc(s.Names(), func(n string) bool { return n == name })
			known := "known: " + strings.Join(others, ", ")
			if len(others) == 0 {
				known = "there are no other services"
			}
			v.add(p, item(p, i), nil, "unknown service %q (%s)", dep, known)
		case seenDep[dep]:
			v.add(p, item(p, i), nil, "%q is listed twice", dep)
		}
		seenDep[dep] = true
	}
}

// command checks a run or health command line.
func (v *validator) command(p string, argv []string, example string) {
	if len(argv) == 0 || argv[0] == "" {
		v.add(p, "", nil, "missing command; e.g. [%q, \"--port\", \"7001\"]", example)
		return
	}
	for i, a := range argv {
		if msg := badValue(a); msg != "" {
			v.add(p, item(p, i), nil, "argument %d %s", i+1, msg)
		}
	}
}

func (v *validator) health(p string, h *Health) {
	var set []string
	if h.HTTP != "" {
		set = append(set, "http")
	}
	if h.TCP != "" {
		set = append(set, "tcp")
	}
	if len(h.Command) > 0 {
		set = append(set, "command")
	}
	switch len(set) {
	case 0:
		v.add(p, "", nil, "no check; set exactly one of http, tcp or command")
	case 1:
	default:
		v.add(p, "", nil, "%s are all set; set exactly one of http, tcp or command", strings.Join(set, " and "))
	}
	// ${VAR} references are expanded by the agent from the service's
	// environment (e.g. ${DCROLL_PORT}); validate the form with a stand-in.
	standIn := func(string) string { return "1" }
	if h.HTTP != "" {
		u, err := url.Parse(os.Expand(h.HTTP, standIn))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || badText(h.HTTP) != "" {
			v.add(p+".http", "", nil, "%q is not an http:// or https:// URL", h.HTTP)
		}
	}
	if h.TCP != "" {
		host, port, err := net.SplitHostPort(os.Expand(h.TCP, standIn))
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			v.add(p+".tcp", "", nil, "%q is not \"host:port\", e.g. \"127.0.0.1:7001\"", h.TCP)
		}
	}
	if len(h.Command) > 0 {
		v.command(p+".command", h.Command, "./check")
	}
	for _, d := range []struct {
		name string
		d    Duration
	}{{"timeout", h.Timeout}, {"min_healthy", h.MinHealthy}, {"deadline", h.Deadline}} {
		if d.d.Duration <= 0 {
			v.add(p+"."+d.name, "", nil, "%s must be positive", d.d)
		}
	}
	if h.Timeout.Duration > h.Deadline.Duration {
		v.add(p+".timeout", "", nil, "%s is longer than the deadline (%s)", h.Timeout, h.Deadline)
	}
	if h.MinHealthy.Duration > h.Deadline.Duration {
		v.add(p+".min_healthy", "", nil, "%s is longer than the deadline (%s)", h.MinHealthy, h.Deadline)
	}
}

// badBlob returns why b is not "sha256:<64 lowercase hex>", or "".
func badBlob(b string) string {
	if blobRE.MatchString(b) {
		return ""
	}
	hex, hasPrefix := strings.CutPrefix(b, "sha256:")
	switch {
	case hasPrefix && hexRE.MatchString(hex):
		return fmt.Sprintf("%q: write the hex digits in lowercase", b)
	case !hasPrefix && hexRE.MatchString(b):
		return fmt.Sprintf("%q: add the prefix, \"sha256:%s\"", b, strings.ToLower(b))
	default:
		return fmt.Sprintf("%q is not a blob reference; expected \"sha256:\" followed by 64 lowercase hex digits", b)
	}
}

// badText returns why s is not a printable one-line label (letters, marks,
// numbers, punctuation, symbols and ASCII space), or "".
func badText(s string) string { return checkText(s, false) }

// badValue is badText that also accepts tabs and newlines, for settings
// values and command arguments.
func badValue(s string) string { return checkText(s, true) }

func checkText(s string, multiline bool) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("contains the non-printable character %U", r)
		}
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LabelNameRE is what an agent label name (and so a domain) looks like:
// "rack", "dc", "pdu", "power-feed". agent.Config.Labels checks its names
// with it too.
var LabelNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// LabelValueRE is what a label value (a rack, a data center, a PDU) and
// so an entry of waves looks like: a znode-safe name.
var LabelValueRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// WellKnownLabels are the labels every agent has: its rack and its data
// center (agent --rack, --dc). Other labels come from the agent config.
var WellKnownLabels = []string{"rack", "dc"}

// domains checks domain and waves.
func (v *validator) domains(path string, svc *Service) {
	if d := svc.Domain; d != "" && !LabelNameRE.MatchString(d) {
		hint := "name an agent label: rack, dc, or a label of the agents' config such as pdu"
		if low := strings.ToLower(strings.TrimSpace(d)); LabelNameRE.MatchString(low) {
			hint = fmt.Sprintf("did you mean %q?", low)
		}
		v.add(path+".domain", "", nil, "%q is not a label name (%s)", d, hint)
	} else if want := labelTypo(d); want != "" {
		v.add(path+".domain", "", nil, "unknown label %q (did you mean %q?); other labels come from the agents' config (labels:)", d, want)
	}
	w := svc.Waves
	if w == nil || w.Order == nil {
		return
	}
	p := path + ".waves"
	if len(w.Order) == 0 {
		v.add(p, "", nil, `empty list; write "dc" (every data center, by name), a list such as [dc-east, dc-west], or omit the field`)
	}
	seen := map[string]bool{}
	for i, dc := range w.Order {
		switch {
		case !LabelValueRE.MatchString(dc):
			v.add(p, item(p, i), nil, "%q is not a data center name (letters, digits, '.', '_' or '-')", dc)
		case seen[dc]:
			v.add(p, item(p, i), nil, "%q is listed twice", dc)
		}
		seen[dc] = true
	}
}

// labelTypo returns the well-known label a domain name looks like a typo
// of ("racks" -> "rack", "datacenter" -> "dc"), or "". Any other name may
// be an agent config label.
func labelTypo(d string) string {
	switch {
	case d == "" || contains(WellKnownLabels, d):
		return ""
	case editDistance(d, "rack") == 1:
		return "rack"
	case d == "dcs", strings.NewReplacer("-", "", "_", "").Replace(d) == "datacenter":
		return "dc"
	}
	return ""
}
