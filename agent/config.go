package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"dcroll/agent/supervise"
	"dcroll/distrib"
	"dcroll/internal/units"
	"dcroll/spec"
	"dcroll/znodes"
)

// Defaults of the agent, defined here once (the spec's own defaults, such
// as min_healthy and the health deadline, stay in package spec). The
// first four are applied to Config by Config.applyDefaults.
const (
	DefaultSessionTimeout = 10 * time.Second
	DefaultPollInterval   = 5 * time.Second
	DefaultHealthInterval = time.Second
	DefaultStopGrace      = supervise.DefaultGrace
	// DefaultDialRetry is the pause between attempts to reach ZooKeeper.
	DefaultDialRetry = 2 * time.Second
	// DefaultStopSlack is how much longer than the stop grace a stop may
	// take (SIGKILL, reaping) before the agent gives up waiting.
	DefaultStopSlack = 10 * time.Second
	// DefaultProbeTimeout bounds one probe of the steady-state health loop
	// (each checker also bounds itself by the spec's health timeout).
	DefaultProbeTimeout = 5 * time.Second
	// DefaultFirstProbe is the first delay between probes after a start;
	// it doubles up to the probe interval until a probe passes.
	DefaultFirstProbe = supervise.FirstProbe
	// A step's wait for health probes at least every
	// DefaultStepProbeMax and at most every DefaultStepProbeMin (a
	// quarter of min_healthy in between).
	DefaultStepProbeMin = 50 * time.Millisecond
	DefaultStepProbeMax = time.Second
)

// Fetcher puts a blob on local disk, verified against its sha256, and
// returns its path. distrib.Node implements it (see NewDistribFetcher);
// tests may use a directory.
type Fetcher interface {
	Fetch(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, error)
}

// Config configures an agent: one machine, one or more services. A config
// file (dcroll agent --config, read by ParseConfig) sets the fields by
// their yaml names:
//
//	machine: r1-m1
//	rack: r1
//	dc: par1
//	labels: {pdu: p3}    # for spec domain: pdu (rack and dc are implicit)
//	services: [store, web]
//	data_dir: /var/lib/dcroll/agent
//	zk: zk1:2181,zk2:2181,zk3:2181
//	zk_auth: /etc/dcroll/agent.cred   # first line user:password, mode 600
//	zk_tls_ca: /etc/dcroll/zk-ca.pem  # TLS to ZooKeeper's secureClientPort
//	trust: [/etc/dcroll/release.pub]  # accept only HEADs signed by these keys
//	mlock_budget: 8GiB   # or 8GB, 8589934592; -1: do not lock
//	congestion_control: cubic   # the blob swarm's TCP: the default; system: the kernel's
//	poll_interval: 5s    # Go durations
//	env:
//	  web: [DCROLL_PORT=8001]
type Config struct {
	// Machine is this machine's name (a znode name). Required.
	Machine string `yaml:"machine" json:"machine"`
	// Rack and DC locate the machine; rack is used by the one-rack-at-a-time rule.
	Rack string `yaml:"rack" json:"rack"`
	DC   string `yaml:"dc" json:"dc"`
	// Labels are further labels of the machine that a spec's upgrade
	// domain may name (domain: pdu), e.g. {pdu: p3}; rack and dc are
	// implicit labels (see labelErrors).
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// Services this agent runs, one worker each. Required.
	Services []string `yaml:"services" json:"services"`
	// DataDir holds state.json, unpacked versions, settings and logs per service. Required.
	DataDir string `yaml:"data_dir" json:"data_dir"`

	// ZK is the ZooKeeper connect string "host:port,host:port". Required.
	ZK string `yaml:"zk" json:"zk"`
	// Root is the dcroll root znode (default /dc).
	Root string `yaml:"root" json:"root"`
	// SessionTimeout requested from ZooKeeper (default 10s). Durations in a
	// config file are Go durations: "10s", "500ms", "1m30s".
	SessionTimeout time.Duration `yaml:"session_timeout" json:"session_timeout"`
	// ZKAuth is the agent's ZooKeeper digest credential file (first line
	// user:password, mode 600); DCROLL_ZK_AUTH=user:password works too.
	ZKAuth string `yaml:"zk_auth" json:"zk_auth,omitempty"`
	// ZKTLSCA turns on TLS to ZooKeeper, trusting this CA bundle (PEM);
	// ZKTLSCert and ZKTLSKey are the agent's client certificate and key.
	ZKTLSCA   string `yaml:"zk_tls_ca" json:"zk_tls_ca,omitempty"`
	ZKTLSCert string `yaml:"zk_tls_cert" json:"zk_tls_cert,omitempty"`
	ZKTLSKey  string `yaml:"zk_tls_key" json:"zk_tls_key,omitempty"`
	// Trust are the public keys (dcroll keygen's KEY.pub files) whose
	// signatures on HEAD this agent accepts; with any, it refuses an
	// unsigned HEAD, a bad signature, an unknown key and a replayed
	// (lower-numbered) HEAD before downloading anything. Several keys:
	// key rotation.
	Trust []string `yaml:"trust" json:"trust,omitempty"`

	// PeerListen is the BitTorrent listen address ip:port (port 0: any).
	PeerListen string `yaml:"peer_listen" json:"peer_listen"`
	// HTTPAddr serves /metrics (Prometheus) and /status (JSON); empty: none.
	HTTPAddr string `yaml:"http_addr" json:"http_addr"`
	// MlockBudget bounds the bytes of data blobs kept locked in memory
	// (0: only RLIMIT_MEMLOCK applies; negative: do not lock). In a config
	// file and in --mlock-budget: plain bytes, 8GiB/512MiB/64KiB (binary)
	// or 8GB/512MB/64KB (decimal), case-insensitive (ParseMlockBudget).
	MlockBudget int64 `yaml:"mlock_budget" json:"mlock_budget"`
	// CongestionControl is the TCP congestion control of the blob swarm's
	// sockets ("": distrib.DefaultCongestionControl, cubic, reno where the
	// kernel refuses it; "system": the kernel's default; or an algorithm
	// of net.ipv4.tcp_available_congestion_control).
	CongestionControl string `yaml:"congestion_control" json:"congestion_control,omitempty"`
	// Env are extra NAME=value variables per service, e.g.
	// {"web": ["DCROLL_PORT=8081"]}; the key "*" applies to every service.
	Env map[string][]string `yaml:"env" json:"env"`

	// PollInterval re-reads ZooKeeper even without a watch event (default 5s).
	PollInterval time.Duration `yaml:"poll_interval" json:"poll_interval"`
	// HealthInterval is how often the running service is probed (default 1s).
	HealthInterval time.Duration `yaml:"health_interval" json:"health_interval"`
	// StopGrace is the SIGTERM-to-SIGKILL delay when stopping a version (default 10s).
	StopGrace time.Duration `yaml:"stop_grace" json:"stop_grace"`

	// StopServicesOnExit stops the services when the agent exits (default:
	// leave them running; the next agent adopts them).
	StopServicesOnExit bool `yaml:"stop_services_on_exit" json:"stop_services_on_exit"`

	// Fetcher overrides blob distribution (default: a distrib node).
	Fetcher Fetcher `yaml:"-" json:"-"`
	// Logger is the agent's logger (default slog.Default()).
	Logger *slog.Logger `yaml:"-" json:"-"`
	// Clock is the time source of decisions (default real time).
	Clock znodes.Clock `yaml:"-" json:"-"`

	// Test hooks, read from the environment only (see testHooksFromEnv);
	// never set in production.
	testUnsafeRules bool
	testSpendDelay  time.Duration
}

// Test-hook environment variables of the fault-matrix suite
// (integration/faults). DCROLL_TEST_UNSAFE_RULES=1 makes the decision core
// ignore quorum, max_parallel and the rack rule, so the suite can show that
// its checker catches a broken rule; DCROLL_TEST_SPEND_DELAY=3s sleeps
// between a decision and its spend (logged as "test hook: delaying spend"),
// so a pause, halt or push can land in between.
const (
	EnvTestUnsafeRules = "DCROLL_TEST_UNSAFE_RULES"
	EnvTestSpendDelay  = "DCROLL_TEST_SPEND_DELAY"
)

func (c *Config) testHooksFromEnv() error {
	c.testUnsafeRules = os.Getenv(EnvTestUnsafeRules) == "1"
	if v := os.Getenv(EnvTestSpendDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", EnvTestSpendDelay, v, err)
		}
		c.testSpendDelay = d
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Root == "" {
		c.Root = znodes.DefaultRoot
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = znodes.RealClock{}
	}
	if c.Rack == "" {
		c.Rack = "default"
	}
	if c.PeerListen == "" {
		c.PeerListen = "127.0.0.1:0"
	}
	if err := c.testHooksFromEnv(); err != nil {
		c.Logger.Warn("ignoring test hook", "err", err)
	}
	if c.testUnsafeRules {
		c.Logger.Warn("TEST HOOK " + EnvTestUnsafeRules + "=1: quorum, max_parallel and the rack rule are IGNORED")
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := znodes.ValidName(c.Machine); err != nil {
		errs = append(errs, fmt.Errorf("machine: %w", err))
	}
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("services: name at least one service this machine runs"))
	}
	seen := map[string]bool{}
	for _, s := range c.Services {
		if err := znodes.ValidName(s); err != nil {
			errs = append(errs, fmt.Errorf("service: %w", err))
		}
		if seen[s] {
			errs = append(errs, fmt.Errorf("service %s listed twice", s))
		}
		seen[s] = true
	}
	errs = append(errs, labelErrors(c.Labels)...)
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required (where versions and state.json live)"))
	}
	if c.ZK == "" {
		errs = append(errs, errors.New("zk: required (host:port of ZooKeeper)"))
	}
	if err := c.zkSecurity().Apply(&znodes.Options{}); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return os.MkdirAll(c.DataDir, 0o755)
}

// zkSecurity is the agent's ZooKeeper credentials and TLS files.
func (c *Config) zkSecurity() znodes.Security {
	return znodes.Security{AuthFile: c.ZKAuth, Auth: os.Getenv(znodes.EnvAuth), TLSCA: c.ZKTLSCA, TLSCert: c.ZKTLSCert, TLSKey: c.ZKTLSKey}
}

// envFor returns the extra environment of a service.
func (c *Config) envFor(service string) []string {
	return append(append([]string(nil), c.Env["*"]...), c.Env[service]...)
}

// LoadConfig reads the agent config file at path (see ParseConfig).
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("agent config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig reads an agent config file: one YAML mapping whose keys are
// the yaml names of Config's fields (machine, services, data_dir, zk,
// mlock_budget, poll_interval, ...). It is strict: an unknown or repeated
// field, a value of the wrong shape or a bad size or duration is an error
// naming the file, line and field, e.g.
//
//	agent.yaml:3: unknown field "service" (did you mean "services"?)
//
// Sizes (mlock_budget) take the forms of units.ParseBytes (8GiB, 8GB,
// 8589934592), or a negative integer for "do not lock". Durations
// (session_timeout, poll_interval, health_interval, stop_grace) are Go
// durations: "4s", "1m30s". Every problem is reported; the error is a
// *spec.ValidationError. filename only labels messages. Defaults are not
// applied (Run does that).
func ParseConfig(filename string, data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, &spec.ValidationError{File: filename, Msg: "empty agent config; expected a mapping (machine, services, data_dir, zk, ...)"}
		}
		return cfg, yamlSyntaxError(filename, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return cfg, yamlSyntaxError(filename, err)
		}
		return cfg, &spec.ValidationError{File: filename, Line: extra.Line, Msg: "more than one YAML document; an agent config holds exactly one"}
	}
	d := &configDecoder{file: filename}
	d.config(&doc, &cfg)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		first := d.errs[0]
		first.More = d.errs[1:]
		return Config{}, first
	}
	return cfg, nil
}

// ParseMlockBudget reads an mlock budget: a size in the forms of
// units.ParseBytes, or a negative integer (do not lock). The --mlock-budget
// flag and the mlock_budget field both use it.
func ParseMlockBudget(s string) (int64, error) {
	if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && n < 0 {
		return n, nil
	}
	return units.ParseBytes(s)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlSyntaxError(file string, err error) error {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &spec.ValidationError{File: file, Line: line, Msg: "malformed YAML: " + m[2]}
	}
	return &spec.ValidationError{File: file, Msg: "malformed YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// configField is one settable field of Config, found by its yaml tag.
type configField struct {
	name  string
	index int
}

// configFields lists the fields a config file may set, in struct order.
var configFields = func() []configField {
	var out []configField
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		out = append(out, configField{name: name, index: i})
	}
	return out
}()

type configDecoder struct {
	file string
	errs []*spec.ValidationError
}

func (d *configDecoder) errorf(n *yaml.Node, field, format string, args ...any) {
	d.errs = append(d.errs, &spec.ValidationError{File: d.file, Line: n.Line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func (d *configDecoder) config(doc *yaml.Node, cfg *Config) {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "", "want a mapping of fields (machine, services, data_dir, zk, ...), got %s", kindName(n))
		return
	}
	known := make([]string, len(configFields))
	byName := map[string]int{}
	for i, f := range configFields {
		known[i] = f.name
		byName[f.name] = f.index
	}
	seen := map[string]int{}
	v := reflect.ValueOf(cfg).Elem()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k == nil || val == nil {
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.errorf(k, "", "keys must be field names (%s)", strings.Join(known, ", "))
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			d.errorf(k, "", "%q is defined twice (first at line %d)", k.Value, prev)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := byName[k.Value]
		if !ok {
			d.errorf(k, "", "unknown field %q (%s)", k.Value, spec.Suggest(k.Value, known, "known fields"))
			continue
		}
		if val.Kind == yaml.ScalarNode && val.ShortTag() == "!!null" {
			continue
		}
		d.field(k.Value, val, v.Field(idx))
	}
}

var durationType = reflect.TypeFor[time.Duration]()

// field decodes one value into dst by dst's type.
func (d *configDecoder) field(name string, n *yaml.Node, dst reflect.Value) {
	switch {
	case dst.Type() == durationType:
		if s, ok := d.scalar(name, n, "a duration, e.g. 4s"); ok {
			dur, err := time.ParseDuration(s)
			if err != nil || dur < 0 {
				d.errorf(n, name, "%q is not a duration: write e.g. 4s, 500ms or 1m30s", s)
				return
			}
			dst.SetInt(int64(dur))
		}
	case dst.Kind() == reflect.Int64:
		if s, ok := d.scalar(name, n, "a size, e.g. 8GiB"); ok {
			size, err := ParseMlockBudget(s)
			if err != nil {
				d.errorf(n, name, "%v; sizes are %s", err, units.SizeForms)
				return
			}
			dst.SetInt(size)
		}
	case dst.Kind() == reflect.String:
		if s, ok := d.scalar(name, n, "a string"); ok {
			if name == "congestion_control" {
				if err := distrib.CheckCongestionControl(s); err != nil {
					d.errorf(n, name, "%v", err)
					return
				}
			}
			dst.SetString(s)
		}
	case dst.Kind() == reflect.Bool:
		if s, ok := d.scalar(name, n, "true or false"); ok {
			b, err := strconv.ParseBool(s)
			if err != nil || n.ShortTag() != "!!bool" {
				d.errorf(n, name, "%q: want true or false", s)
				return
			}
			dst.SetBool(b)
		}
	case dst.Type() == reflect.TypeFor[map[string]string]():
		dst.Set(reflect.ValueOf(d.labels(name, n)))
	case dst.Type() == reflect.TypeFor[[]string]():
		dst.Set(reflect.ValueOf(d.strings(name, n)))
	case dst.Type() == reflect.TypeFor[map[string][]string]():
		if n.Kind != yaml.MappingNode {
			d.errorf(n, name, "want a mapping of SERVICE (or *) to a list of NAME=value, got %s", kindName(n))
			return
		}
		m := map[string][]string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
			if k == nil || v == nil || k.Kind != yaml.ScalarNode {
				continue
			}
			p := name + "." + k.Value
			vars := d.strings(p, v)
			for _, kv := range vars {
				if !strings.Contains(kv, "=") {
					d.errorf(v, p, "%q: want NAME=value", kv)
				}
			}
			m[k.Value] = vars
		}
		dst.Set(reflect.ValueOf(m))
	default:
		d.errorf(n, name, "cannot be set in a config file")
	}
}

func (d *configDecoder) scalar(name string, n *yaml.Node, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, name, "want %s, got %s", want, kindName(n))
		return "", false
	}
	return n.Value, true
}

func (d *configDecoder) strings(name string, n *yaml.Node) []string {
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(", e.g. [%s]", n.Value)
		}
		d.errorf(n, name, "want a list%s, got %s", hint, kindName(n))
		return nil
	}
	var out []string
	for _, e := range n.Content {
		e = resolve(e)
		if e == nil {
			continue
		}
		if e.Kind != yaml.ScalarNode {
			d.errorf(e, name, "want a list of strings, got %s in it", kindName(e))
			continue
		}
		out = append(out, e.Value)
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}
