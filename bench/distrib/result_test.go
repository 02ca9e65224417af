package main

import (
	"math"
	"strings"
	"testing"

	"dcroll/integration/netns"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"128MiB", 128 << 20, false},
		{"32MiB", 32 << 20, false},
		{"1GiB", 1 << 30, false},
		{"512KiB", 512 << 10, false},
		{"4MB", 4e6, false},
		{"1.5GiB", 3 << 29, false},
		{"1000", 1000, false},
		{"0", 0, false},
		{"MiB", 0, true},
		{"-1MiB", 0, true},
		{"ten", 0, true},
	} {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestResultChecks feeds made-up measurements through finish and checks the
// derived ratios, the per-rack view and the target verdicts.
func TestResultChecks(t *testing.T) {
	const s = 100 << 20
	cfg := Config{Size: s, Racks: 2, Hosts: 2, HostMbit: 80, UplinkMbit: 40, SeederMbit: 80, MTU: 1500}
	bound := float64(s) * 8 / 40e6 // S / min(host, uplink)
	hosts := func(sec float64) []HostResult {
		return []HostResult{
			{Machine: "r0h0", Rack: "r0", Seconds: sec * 0.9, Source: "swarm"},
			{Machine: "r0h1", Rack: "r0", Seconds: sec, Source: "swarm"},
			{Machine: "r1h0", Rack: "r1", Seconds: sec * 0.8, Source: "swarm"},
			{Machine: "r1h1", Rack: "r1", Seconds: sec * 0.7, Source: "webseed"},
		}
	}
	for _, tc := range []struct {
		name       string
		rackSec    float64
		into       int64 // per rack
		centralSec float64
		wantOK     []bool // bound, median, cross-rack, speedup
	}{
		{"all met", 1.2 * bound, s * 11 / 10, 10 * bound, []bool{true, true, true, true}},
		{"slow", 2 * bound, s, 10 * bound, []bool{false, false, true, true}},
		{"too much cross-rack", 1.1 * bound, 2 * s, 10 * bound, []bool{true, true, false, true}},
		{"central close", 1.1 * bound, s, 3 * bound, []bool{true, true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResult(cfg)
			if math.Abs(r.BoundSeconds-bound) > 1e-9 {
				t.Fatalf("bound = %v, want %v", r.BoundSeconds, bound)
			}
			per := map[string]netns.LinkBytes{"r0": {Down: tc.into}, "r1": {Down: tc.into}}
			r.Modes = []ModeResult{
				{Mode: ModeRack, Seconds: tc.rackSec, Hosts: hosts(tc.rackSec), PerRack: per, IntoRacksBytes: 2 * tc.into},
				{Mode: ModeCentral, Seconds: tc.centralSec, Hosts: hosts(tc.centralSec), PerRack: per, IntoRacksBytes: 2 * tc.into},
			}
			r.finish()
			if len(r.Checks) != 4 {
				t.Fatalf("checks = %+v, want 4", r.Checks)
			}
			for i, ch := range r.Checks {
				if ch.OK != tc.wantOK[i] {
					t.Errorf("check %q got %.2f ok=%v, want ok=%v", ch.What, ch.Got, ch.OK, tc.wantOK[i])
				}
			}
			m := r.Modes[0]
			if m.Sources["swarm"] != 3 || m.Sources["webseed"] != 1 {
				t.Errorf("sources = %v, want 3 swarm 1 webseed", m.Sources)
			}
			if len(m.Racks) != 2 || m.Racks[0].LastSeconds != tc.rackSec || m.Racks[1].LastSeconds != 0.8*tc.rackSec {
				t.Errorf("racks = %+v", m.Racks)
			}
			md := r.Markdown()
			for _, want := range []string{"| rack |", "| central |", "3 swarm, 1 webseed"} {
				if !strings.Contains(md, want) {
					t.Errorf("markdown lacks %q:\n%s", want, md)
				}
			}
		})
	}
}
