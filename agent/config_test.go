package agent

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"dcroll/spec"
)

func TestParseConfig(t *testing.T) {
	got, err := ParseConfig("agent.yaml", []byte(`machine: r1-m1
rack: r1
dc: par1
services: [store, web]
data_dir: /var/lib/dcroll/agent
zk: zk1:2181,zk2:2181
root: /dc2
session_timeout: 4s
peer_listen: 10.0.0.1:6881
http_addr: :9100
mlock_budget: 8GiB
congestion_control: bbr
env:
  "*": [A=1]
  web: [DCROLL_PORT=8001]
poll_interval: 1m30s
health_interval: 500ms
stop_grace: 20s
stop_services_on_exit: true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Machine: "r1-m1", Rack: "r1", DC: "par1", Services: []string{"store", "web"}, DataDir: "/var/lib/dcroll/agent",
		ZK: "zk1:2181,zk2:2181", Root: "/dc2", SessionTimeout: 4 * time.Second, PeerListen: "10.0.0.1:6881", HTTPAddr: ":9100",
		MlockBudget: 8 << 30, CongestionControl: "bbr", Env: map[string][]string{"*": {"A=1"}, "web": {"DCROLL_PORT=8001"}},
		PollInterval: 90 * time.Second, HealthInterval: 500 * time.Millisecond, StopGrace: 20 * time.Second, StopServicesOnExit: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseConfig:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseConfigSizes(t *testing.T) {
	for in, want := range map[string]int64{"8GiB": 8 << 30, "8GB": 8e9, "8 gb": 8e9, "512MiB": 512 << 20, "64kb": 64e3, "8589934592": 8 << 30, "-1": -1, "0": 0} {
		cfg, err := ParseConfig("agent.yaml", []byte("mlock_budget: "+in+"\n"))
		if err != nil || cfg.MlockBudget != want {
			t.Errorf("mlock_budget: %s = %d, %v; want %d", in, cfg.MlockBudget, err, want)
		}
		if n, err := ParseMlockBudget(in); err != nil || n != want {
			t.Errorf("ParseMlockBudget(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"machine: m1\nrack: r1\nservice: [store]\n", `agent.yaml:3: unknown field "service" (did you mean "services"?)`},
		{"colour: blue\n", `agent.yaml:1: unknown field "colour" (known fields: machine, rack, dc, labels, services, data_dir, zk, root, session_timeout, zk_auth, zk_tls_ca, zk_tls_cert, zk_tls_key, trust, peer_listen, http_addr, mlock_budget, congestion_control, env, poll_interval, health_interval, stop_grace, stop_services_on_exit)`},
		{"mlock_budget: 8 lots\n", `agent.yaml:1: mlock_budget: "8 lots" is not a size: write bytes, 8GiB or 8GB; sizes are plain bytes (1048576), binary 8GiB/512MiB/64KiB, or decimal 8GB/512MB/64KB; case-insensitive, a space is allowed (8 GiB)`},
		{"congestion_control: BBR v2\n", `agent.yaml:1: congestion_control: congestion control "BBR v2": want an algorithm of this kernel (cubic, reno, bbr: /proc/sys/net/ipv4/tcp_available_congestion_control) or "system" for its default`},
		{"mlock_budget: 8G\n", `agent.yaml:1: mlock_budget: "8G" is ambiguous: write 8GiB (binary) or 8GB (decimal); sizes are plain bytes (1048576), binary 8GiB/512MiB/64KiB, or decimal 8GB/512MB/64KB; case-insensitive, a space is allowed (8 GiB)`},
		{"\npoll_interval: 4\n", `agent.yaml:2: poll_interval: "4" is not a duration: write e.g. 4s, 500ms or 1m30s`},
		{"stop_grace: [1s]\n", `agent.yaml:1: stop_grace: want a duration, e.g. 4s, got a list`},
		{"services: store\n", `agent.yaml:1: services: want a list, e.g. [store], got "store"`},
		{"rack: {a: 1}\n", `agent.yaml:1: rack: want a string, got a mapping`},
		{"stop_services_on_exit: yes\n", `agent.yaml:1: stop_services_on_exit: "yes": want true or false`},
		{"env:\n  web: [PORT]\n", `agent.yaml:2: env.web: "PORT": want NAME=value`},
		{"rack: a\nrack: b\n", `agent.yaml:2: "rack" is defined twice (first at line 1)`},
		{"- machine\n", `agent.yaml:1: want a mapping of fields (machine, services, data_dir, zk, ...), got a list`},
		{"", `agent.yaml: empty agent config; expected a mapping (machine, services, data_dir, zk, ...)`},
		{"rack: a\n---\nrack: b\n", `agent.yaml:2: more than one YAML document; an agent config holds exactly one`},
		{"rack: [a\n", `agent.yaml:1: malformed YAML: did not find expected ',' or ']'`},
		{"servce: [a]\nmlock_budget: lots\n", `agent.yaml:1: unknown field "servce" (did you mean "services"?) (and 1 more problem)`},
	} {
		_, err := ParseConfig("agent.yaml", []byte(tc.in))
		var ve *spec.ValidationError
		if err == nil || err.Error() != tc.want || !errors.As(err, &ve) {
			t.Errorf("ParseConfig(%q):\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}
