package spec

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SchemaVersion is the version of the spec format. It is written into the
// canonical form, so it is part of every spec ID.
const SchemaVersion = 1

// Defaults applied by [Parse] and [Spec.ApplyDefaults].
const (
	DefaultHealthTimeout    = 5 * time.Second
	DefaultHealthMinHealthy = 2 * time.Second
	DefaultHealthDeadline   = 2 * time.Minute
	DefaultMaxParallel      = 1
	DefaultQuorum           = 1 // machines; applied by Parse only when quorum is absent
	DefaultReloadSignal     = "SIGHUP"
	DefaultTimezone         = "UTC"
	// DefaultProgressDeadline is Service.ProgressDeadline when absent.
	DefaultProgressDeadline = 30 * time.Minute
)

// Spec is one staging spec: everything the machines should run next.
type Spec struct {
	// Name is a human label shown in history and dashboards
	// (e.g. "nightly-2026-11-22"). Required.
	Name string `yaml:"name" json:"name"`
	// Window restricts when a rollout may progress. Nil means always.
	Window *Window `yaml:"window,omitempty" json:"window,omitempty"`
	// Services by name. Names match ^[a-z0-9][a-z0-9_-]{0,62}$ because they
	// become znode names. At least one is required.
	Services map[string]*Service `yaml:"services" json:"services"`
}

// Window is a daily maintenance window in wall-clock time of Timezone.
// Start is inclusive, End exclusive; End before Start means the window
// crosses midnight (22:00-04:00).
//
// Each day the window opens at the first instant the clock of Timezone
// reads Start or later, and closes at the first instant it reads End (on the
// next day if the window crosses midnight) or later. On DST transitions
// that means:
//
//   - A time that does not exist (spring forward, e.g. 02:30 in Paris on
//     2026-03-29, when 02:00 CET becomes 03:00 CEST) is taken as the
//     instant of the jump: 22:00-02:30 closes at 02:00 CET, 02:30-05:00 opens
//     at 03:00 CEST, and 02:10-02:40 does not open that day.
//   - A time that occurs twice (fall back, e.g. 02:30 in Paris on
//     2026-10-25, when 03:00 CEST becomes 02:00 CET) is its first
//     occurrence, for Start and End alike: 22:00-02:30 closes at 02:30 CEST
//     and does not reopen when the clock shows 02:00-02:30 again;
//     02:30-05:00 opens at 02:30 CEST and stays open through the repeated
//     hour; 01:00-05:00 is open 5 real hours.
//
// So a window opens at most once a day, as one unbroken stretch of time,
// and the closed part of a window crossing midnight never vanishes unless it
// lies entirely in a gap. [Window.Remaining] and [Window.NextOpen] are real
// durations and instants consistent with [Window.Open].
type Window struct {
	// Start is "HH:MM" (24h).
	Start string `yaml:"start" json:"start"`
	// End is "HH:MM" (24h), different from Start.
	End string `yaml:"end" json:"end"`
	// Timezone is an IANA name such as "Europe/Paris"; default "UTC".
	// "Local" is rejected: machines must agree on the window.
	Timezone string `yaml:"timezone" json:"timezone"`
}

// Service is one service of a spec.
type Service struct {
	// Version is a label for humans and history; non-empty, printable, no "/".
	Version string `yaml:"version" json:"version"`
	// Artifact is the code blob, "sha256:" + 64 lowercase hex digits.
	Artifact string `yaml:"artifact" json:"artifact"`
	// Data are static data blobs (same form as Artifact), in the order given.
	Data []string `yaml:"data,omitempty" json:"data,omitempty"`
	// Run is the command line, relative to the unpacked artifact. Non-empty.
	Run []string `yaml:"run" json:"run"`
	// Health is how to tell that a started instance is healthy. Nil means
	// "running for MinHealthy is enough" (the agent decides).
	Health *Health `yaml:"health,omitempty" json:"health,omitempty"`
	// Quorum is how many machines of the service must stay up during a
	// rollout. Parse defaults it to 1 when absent; the zero Quorum means 0.
	Quorum Quorum `yaml:"quorum" json:"quorum"`
	// MaxParallel is how many machines may upgrade at once; >= 1, default 1.
	MaxParallel int `yaml:"max_parallel" json:"max_parallel"`
	// Settings are applied without a restart: a change that only touches
	// settings is delivered with ReloadSignal.
	Settings map[string]string `yaml:"settings,omitempty" json:"settings,omitempty"`
	// ReloadSignal tells the process that settings changed; default SIGHUP.
	ReloadSignal string `yaml:"reload_signal" json:"reload_signal"`
	// DependsOn names services that must be rolled out before this one.
	// It is a set: the canonical form sorts it.
	DependsOn []string `yaml:"depends_on,omitempty" json:"depends_on,omitempty"`
	// ProgressDeadline is how long the service's active deploy entry may
	// go without progress (no member changing version, state or health,
	// no step record appearing or disappearing) before the elected
	// coordinator halts it; positive, default 30m. The zero value means
	// the default, and the canonical form omits the default, so specs
	// written before this field keep their ids: read it with
	// [Service.Deadline].
	ProgressDeadline Duration `yaml:"progress_deadline,omitempty" json:"progress_deadline,omitzero"`
	// Canary, when set, steps only the first Canary.Machines members of
	// the service, then holds the rest until those canaries have stayed
	// healthy on the new version for Canary.Bake, or until an operator
	// runs dcroll promote SERVICE. A canary that fails halts the rollout
	// as any step does. It has no effect on a new service or a removal.
	Canary *Canary `yaml:"canary,omitempty" json:"canary,omitempty"`
	// Domain, when set, names the agent label whose values are the
	// service's upgrade domains ("rack", "dc", or a label of the agents'
	// config such as "pdu"): the members of one domain step together (as
	// many at once as max_parallel and the quorum allow), one domain after
	// another in the order of their values, never two domains down. Empty:
	// one rack at a time, as without it. The canonical form omits it when
	// unset, so specs written before it keep their ids.
	Domain string `yaml:"domain,omitempty" json:"domain,omitempty"`
	// Waves, when set, rolls the service out one data center at a time:
	// every member of a data center finishes before the next one starts.
	// See [Waves].
	Waves *Waves `yaml:"waves,omitempty" json:"waves,omitempty"`
}

// WavesByDC is the one-word form of [Waves]: every data center is a wave,
// in the order of their names.
const WavesByDC = "dc"

// Waves orders a service's rollout by data center (Service.Waves):
// "dc" (every data center the members report, sorted by name) or an
// explicit list of data centers, first to last (data centers the list
// omits go last, sorted by name; dcroll plan warns about them). In YAML
// and JSON it is the string "dc" or a list of names.
type Waves struct {
	// Order is the explicit list; nil for "dc".
	Order []string
}

// ByName reports the "dc" form (data centers sorted by name).
func (w *Waves) ByName() bool { return w != nil && w.Order == nil }

// String returns "dc" or "[dc-east, dc-west]".
func (w *Waves) String() string {
	if w == nil {
		return ""
	}
	if w.Order == nil {
		return WavesByDC
	}
	return "[" + strings.Join(w.Order, ", ") + "]"
}

// MarshalJSON writes "dc" or a list of data centers.
func (w Waves) MarshalJSON() ([]byte, error) {
	if w.Order == nil {
		return json.Marshal(WavesByDC)
	}
	return json.Marshal(w.Order)
}

// UnmarshalJSON reads "dc" or a list of data centers.
func (w *Waves) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != WavesByDC {
			return fmt.Errorf("waves: %q: write \"dc\" or a list of data centers", s)
		}
		*w = Waves{}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("waves must be \"dc\" or a list of data centers")
	}
	if list == nil {
		list = []string{}
	}
	*w = Waves{Order: list}
	return nil
}

// MarshalYAML writes "dc" or a list of data centers.
func (w Waves) MarshalYAML() (any, error) {
	if w.Order == nil {
		return WavesByDC, nil
	}
	return w.Order, nil
}

// Canary is a service's canary phase (Service.Canary).
type Canary struct {
	// Machines is how many members step first; >= 1.
	Machines int `yaml:"machines" json:"machines"`
	// Bake is how long every canary must stay healthy on the new version
	// before the rest may step; 0 (omitted): only dcroll promote lets
	// the rest go.
	Bake Duration `yaml:"bake,omitempty" json:"bake,omitzero"`
}

// Deadline returns ProgressDeadline, or DefaultProgressDeadline when unset.
func (s *Service) Deadline() time.Duration {
	if s == nil || s.ProgressDeadline.Duration == 0 {
		return DefaultProgressDeadline
	}
	return s.ProgressDeadline.Duration
}

// Health is a health check: exactly one of HTTP, TCP or Command.
type Health struct {
	// HTTP is an http:// or https:// URL; healthy means a 2xx answer.
	HTTP string `yaml:"http,omitempty" json:"http,omitempty"`
	// TCP is "host:port"; healthy means the port accepts connections.
	TCP string `yaml:"tcp,omitempty" json:"tcp,omitempty"`
	// Command is run relative to the unpacked artifact; healthy means exit 0.
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	// Timeout bounds one probe; default 5s.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// MinHealthy is how long probes must keep passing before the instance
	// counts as healthy; default 2s.
	MinHealthy Duration `yaml:"min_healthy" json:"min_healthy"`
	// Deadline is how long a new instance has to become healthy before the
	// upgrade counts as failed; default 2m.
	Deadline Duration `yaml:"deadline" json:"deadline"`
}

// Duration is a time.Duration written as a Go duration string ("5s", "2m")
// in YAML and JSON.
type Duration struct{ time.Duration }

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write a number with a unit, e.g. \"5s\" or \"2m\"", s)
	}
	return d, nil
}

// MarshalJSON writes the duration as a string such as "2m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5s\"")
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as a string such as "2m0s".
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a string such as \"5s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	d.Duration = v
	return nil
}

// Quorum is how many machines of a service must stay up: either a count or
// a percentage of the service's machines. Percent > 0 means percentage;
// otherwise Count is used ("0%" is stored as Count 0).
type Quorum struct {
	Count   int
	Percent int
}

// Min returns how many of total machines must stay up. A percentage rounds
// up; the result is never more than total nor less than 0.
func (q Quorum) Min(total int) int {
	if total <= 0 {
		return 0
	}
	n := q.Count
	if q.Percent > 0 {
		n = (total*q.Percent + 99) / 100
	}
	return max(0, min(n, total))
}

// String returns "2" or "60%".
func (q Quorum) String() string {
	if q.Percent != 0 {
		return strconv.Itoa(q.Percent) + "%"
	}
	return strconv.Itoa(q.Count)
}

// parseQuorumString parses "60%". Range is checked by validation.
func parseQuorumString(s string) (Quorum, error) {
	p, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return Quorum{}, fmt.Errorf("%q is neither a number of machines (2) nor a percentage (\"60%%\")", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(p))
	if err != nil {
		return Quorum{}, fmt.Errorf("%q is not a whole percentage such as \"60%%\"", s)
	}
	if n == 0 {
		return Quorum{}, nil
	}
	return Quorum{Percent: n}, nil
}

// MarshalJSON writes 2 or "60%".
func (q Quorum) MarshalJSON() ([]byte, error) {
	if q.Percent > 0 {
		return json.Marshal(q.String())
	}
	return json.Marshal(q.Count)
}

// UnmarshalJSON reads 2 or "60%".
func (q *Quorum) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*q = Quorum{Count: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("quorum must be a number (2) or a percentage (\"60%%\")")
	}
	v, err := parseQuorumString(s)
	if err != nil {
		return err
	}
	*q = v
	return nil
}

// MarshalYAML writes 2 or "60%".
func (q Quorum) MarshalYAML() (any, error) {
	if q.Percent > 0 {
		return q.String(), nil
	}
	return q.Count, nil
}

// UnmarshalYAML reads 2 or "60%".
func (q *Quorum) UnmarshalYAML(n *yaml.Node) error {
	v, err := decodeQuorum(n)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*q = v
	return nil
}

func decodeQuorum(n *yaml.Node) (Quorum, error) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var c int
		if err := n.Decode(&c); err != nil {
			return Quorum{}, fmt.Errorf("%q is not a whole number", n.Value)
		}
		return Quorum{Count: c}, nil
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		return parseQuorumString(n.Value)
	}
	return Quorum{}, fmt.Errorf("%q is neither a number of machines (2) nor a percentage (\"60%%\")", n.Value)
}

// ApplyDefaults fills zero-valued fields with their defaults: MaxParallel,
// ReloadSignal, Health durations and Window.Timezone. ProgressDeadline is
// the exception: it stays zero for the default (an explicit 30m becomes
// zero), so that adding the field changed no spec id; [Service.Deadline]
// applies it. It also normalizes:
// DependsOn is sorted, empty slices and maps become nil. Quorum is left
// alone (its zero value, 0, is meaningful); Parse defaults it when absent.
func (s *Spec) ApplyDefaults() {
	if w := s.Window; w != nil && w.Timezone == "" {
		w.Timezone = DefaultTimezone
	}
	for _, svc := range s.Services {
		if svc == nil {
			continue
		}
		if svc.MaxParallel == 0 {
			svc.MaxParallel = DefaultMaxParallel
		}
		if svc.ReloadSignal == "" {
			svc.ReloadSignal = DefaultReloadSignal
		}
		if h := svc.Health; h != nil {
			if h.Timeout.Duration == 0 {
				h.Timeout.Duration = DefaultHealthTimeout
			}
			if h.MinHealthy.Duration == 0 {
				h.MinHealthy.Duration = DefaultHealthMinHealthy
			}
			if h.Deadline.Duration == 0 {
				h.Deadline.Duration = DefaultHealthDeadline
			}
			if len(h.Command) == 0 {
				h.Command = nil
			}
		}
		if len(svc.Data) == 0 {
			svc.Data = nil
		}
		if len(svc.Settings) == 0 {
			svc.Settings = nil
		}
		if svc.ProgressDeadline.Duration == DefaultProgressDeadline {
			svc.ProgressDeadline.Duration = 0 // the default: one canonical form
		}
		if len(svc.DependsOn) == 0 {
			svc.DependsOn = nil
		} else {
			sort.Strings(svc.DependsOn)
		}
	}
}

// Clone returns a deep copy of s.
func (s *Spec) Clone() *Spec {
	if s == nil {
		return nil
	}
	c := &Spec{Name: s.Name}
	if s.Window != nil {
		w := *s.Window
		c.Window = &w
	}
	if s.Services != nil {
		c.Services = make(map[string]*Service, len(s.Services))
	}
	for name, svc := range s.Services {
		if svc == nil {
			c.Services[name] = nil
			continue
		}
		v := *svc
		v.Data = cloneSlice(svc.Data)
		v.Run = cloneSlice(svc.Run)
		v.DependsOn = cloneSlice(svc.DependsOn)
		if svc.Settings != nil {
			v.Settings = make(map[string]string, len(svc.Settings))
			for k, x := range svc.Settings {
				v.Settings[k] = x
			}
		}
		if svc.Canary != nil {
			cn := *svc.Canary
			v.Canary = &cn
		}
		if svc.Waves != nil {
			wv := Waves{Order: cloneSlice(svc.Waves.Order)}
			v.Waves = &wv
		}
		if svc.Health != nil {
			h := *svc.Health
			h.Command = cloneSlice(svc.Health.Command)
			v.Health = &h
		}
		c.Services[name] = &v
	}
	return c
}

func cloneSlice(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

// Names returns the service names, sorted.
func (s *Spec) Names() []string {
	names := make([]string, 0, len(s.Services))
	for name := range s.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Blobs returns every blob the spec references (artifacts and data),
// sorted and without duplicates.
func (s *Spec) Blobs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(b string) {
		if b != "" && !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	for _, svc := range s.Services {
		if svc == nil {
			continue
		}
		add(svc.Artifact)
		for _, d := range svc.Data {
			add(d)
		}
	}
	sort.Strings(out)
	return out
}

// Arrange returns the data centers dcs in wave order: the explicit list
// first (those of it present in dcs), then the others sorted by name; for
// "dc", all sorted by name. Duplicates in dcs are dropped.
func (w *Waves) Arrange(dcs []string) []string {
	set := map[string]bool{}
	for _, dc := range dcs {
		set[dc] = true
	}
	var out []string
	if w != nil {
		for _, dc := range w.Order {
			if set[dc] {
				out = append(out, dc)
				delete(set, dc)
			}
		}
	}
	rest := make([]string, 0, len(set))
	for dc := range set {
		rest = append(rest, dc)
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// Unlisted returns the data centers of dcs an explicit wave list omits
// (they go last), sorted; nil for "dc".
func (w *Waves) Unlisted(dcs []string) []string {
	if w == nil || w.Order == nil {
		return nil
	}
	var out []string
	for _, dc := range w.Arrange(dcs) {
		if !contains(w.Order, dc) {
			out = append(out, dc)
		}
	}
	return out
}
