package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"dcroll/distrib"
	"dcroll/integration/netns"
)

// Targets the rack-aware swarm must meet (issue 12).
const (
	targetBound   = 1.2 // every host <= 1.2 x the lower bound
	targetMedian  = 1.1 // median host <= 1.1 x the lower bound
	targetCross   = 1.1 // bytes into racks <= 1.1 x one copy per rack
	targetAria2   = 1.3 // >= 1.3 x faster than aria2c + opentracker
	targetFault   = 1.1 // a dead chain member or gateway adds <= 10 %
	targetWAN     = 1.1 // bytes across the WAN <= 1.1 x one copy per data center without an origin
	targetSpeedup = 5.0 // >= 5x faster than central copy
)

// Result is one benchmark run.
type Result struct {
	Date   time.Time `json:"date"`
	Config Config    `json:"config"`
	// BoundSeconds is the swarm lower bound max(S/min(host, uplink), S/seeder):
	// every host must download S over its link, every rack over its uplink.
	BoundSeconds float64 `json:"bound_seconds"`
	// CentralBoundSeconds is central copy's bound max(N*S/seeder,
	// hostsPerRack*S/uplink, S/host).
	CentralBoundSeconds float64 `json:"central_bound_seconds"`
	// OneCopyPerRack is the cross-rack anchor S x racks (the seeder sits on
	// the core, outside every rack).
	OneCopyPerRack int64        `json:"one_copy_per_rack_bytes"`
	Modes          []ModeResult `json:"modes"`
	Checks         []Check      `json:"checks"`
}

// ModeResult is one mode's measurement.
type ModeResult struct {
	Mode         string  `json:"mode"`
	Seconds      float64 `json:"seconds"` // "go" until the last host reported its verified blob
	P50Seconds   float64 `json:"p50_seconds"`
	RatioToBound float64 `json:"ratio_to_bound"`
	// IntoRacksBytes counts every byte that crossed a rack uplink from the
	// core into a rack (headers included; veth counters see GSO segments,
	// so header overhead is well under 1 %).
	IntoRacksBytes  int64                      `json:"into_racks_bytes"`
	IntoRacksRatio  float64                    `json:"into_racks_ratio"` // / (S x racks)
	PerRack         map[string]netns.LinkBytes `json:"per_rack"`
	SeederSentBytes int64                      `json:"seeder_sent_bytes"`
	CPUBusy         float64                    `json:"cpu_busy"`         // machine-wide busy fraction of all cores during the transfer (includes other users)
	ProcCPUSeconds  float64                    `json:"proc_cpu_seconds"` // user+system CPU of the origin and host processes during the transfer (kernel networking not included)
	Verified        int                        `json:"verified"`         // hosts whose blob re-hashed correctly
	// Sources counts hosts by where their blob came from; From* sum what
	// the hosts' nodes counted per peer class.
	Sources   map[string]int `json:"sources"`
	FromRack  int64          `json:"from_rack_bytes"`
	FromDC    int64          `json:"from_dc_bytes"`
	FromOther int64          `json:"from_other_bytes"`
	Racks     []RackResult   `json:"racks"`
	Hosts     []HostResult   `json:"hosts"`
	// Fault is what a fault mode killed, and when.
	Fault string `json:"fault,omitempty"`
	// WANBytes crossed the WAN toward dc2 (wan mode); DCs is the wan
	// mode's per-data-center view.
	WANBytes   int64      `json:"wan_bytes,omitempty"`
	WANDelayed bool       `json:"wan_delayed,omitempty"` // netem delay applied
	DCs        []DCResult `json:"dcs,omitempty"`
	// Median time to the first byte and to half the blob, over hosts.
	P50FirstByteSeconds float64 `json:"p50_first_byte_seconds,omitempty"`
	P50HalfSeconds      float64 `json:"p50_half_seconds,omitempty"`
	Err                 string  `json:"err,omitempty"`

	wan *wanLink
}

// DCResult is one data center in the wan mode.
type DCResult struct {
	DC           string  `json:"dc"`
	Hosts        int     `json:"hosts"`
	LastSeconds  float64 `json:"last_seconds"`
	P50Seconds   float64 `json:"p50_seconds"`
	BoundSeconds float64 `json:"bound_seconds"` // S over its slowest way in: host link, rack uplink, and the WAN for dc2
	RatioToBound float64 `json:"ratio_to_bound"`
}

// RackResult is one rack's view of a mode. When LastSeconds is close to
// UplinkSeconds, the rack's uplink was the bottleneck.
type RackResult struct {
	Rack          string  `json:"rack"`
	LastSeconds   float64 `json:"last_seconds"`   // last host of the rack done
	IntoBytes     int64   `json:"into_bytes"`     // core -> rack over the uplink
	UplinkSeconds float64 `json:"uplink_seconds"` // IntoBytes at the uplink rate
}

// HostResult is one host's fetch.
type HostResult struct {
	Machine      string  `json:"machine"`
	Rack         string  `json:"rack"`
	Seconds      float64 `json:"seconds"`       // from "go" to its done line
	FetchSeconds float64 `json:"fetch_seconds"` // as measured by the host
	Verified     bool    `json:"verified"`
	DC           string  `json:"dc"`
	Source       string  `json:"source"` // swarm, webseed (distrib fell back to HTTP) or http (central)
	// Timeline from progress lines (swarm modes): first byte, half the blob.
	FirstByteSeconds float64 `json:"first_byte_seconds,omitempty"`
	HalfSeconds      float64 `json:"half_seconds,omitempty"`
	// Timeline: bytes held at each whole second since the start (swarm modes).
	Timeline []int64 `json:"timeline,omitempty"`
	// Killed by a fault mode (not counted in the mode's times).
	Killed          bool    `json:"killed,omitempty"`
	KilledAtSeconds float64 `json:"killed_at_seconds,omitempty"`
	KilledAtBytes   int64   `json:"killed_at_bytes,omitempty"`
	FromRack        int64   `json:"from_rack"`  // bytes from same-rack peers (distrib's count)
	FromDC          int64   `json:"from_dc"`    // from peers in other racks
	FromOther       int64   `json:"from_other"` // from the origin (seeder, web seed)
	Err             string  `json:"err,omitempty"`
}

// Check is one target and whether it was met.
type Check struct {
	What  string  `json:"what"`
	Got   float64 `json:"got"`
	Limit string  `json:"limit"`
	OK    bool    `json:"ok"`
}

func seconds(bytes int64, mbit float64) float64 {
	if mbit <= 0 {
		return 0
	}
	return float64(bytes) * 8 / (mbit * 1e6)
}

func newResult(cfg Config) *Result {
	s := cfg.Size
	n := int64(cfg.Racks * cfg.Hosts)
	return &Result{
		Date:   time.Now().UTC(),
		Config: cfg,
		BoundSeconds: max(seconds(s, min(nonZero(cfg.HostMbit), nonZero(cfg.UplinkMbit))),
			seconds(s, cfg.SeederMbit)),
		CentralBoundSeconds: max(seconds(n*s, cfg.SeederMbit), seconds(int64(cfg.Hosts)*s, cfg.UplinkMbit),
			seconds(s, cfg.HostMbit)),
		OneCopyPerRack: s * int64(cfg.Racks),
	}
}

func nonZero(mbit float64) float64 {
	if mbit <= 0 {
		return 1e12 // unshaped
	}
	return mbit
}

// finish fills the derived numbers and the target checks.
func (r *Result) finish() {
	for i := range r.Modes {
		m := &r.Modes[i]
		if r.BoundSeconds > 0 {
			m.RatioToBound = m.Seconds / r.BoundSeconds
		}
		m.IntoRacksRatio = float64(m.IntoRacksBytes) / float64(r.OneCopyPerRack)
		var t, fb, half []float64
		m.Sources = map[string]int{}
		m.FromRack, m.FromDC, m.FromOther = 0, 0, 0
		for _, h := range m.Hosts {
			if h.Killed {
				continue
			}
			t = append(t, h.Seconds)
			if h.FirstByteSeconds > 0 {
				fb = append(fb, h.FirstByteSeconds)
			}
			if h.HalfSeconds > 0 {
				half = append(half, h.HalfSeconds)
			}
			if h.Source != "" {
				m.Sources[h.Source]++
			}
			m.FromRack += h.FromRack
			m.FromDC += h.FromDC
			m.FromOther += h.FromOther
		}
		m.P50Seconds, m.P50FirstByteSeconds, m.P50HalfSeconds = median(t), median(fb), median(half)
		m.Racks = nil
		for _, rack := range slices.Sorted(maps.Keys(m.PerRack)) {
			rr := RackResult{Rack: rack, IntoBytes: m.PerRack[rack].Down, UplinkSeconds: seconds(m.PerRack[rack].Down, r.Config.UplinkMbit)}
			for _, h := range m.Hosts {
				if h.Rack == rack && !h.Killed {
					rr.LastSeconds = max(rr.LastSeconds, h.Seconds)
				}
			}
			m.Racks = append(m.Racks, rr)
		}
		if m.Mode == ModeWAN {
			m.DCs = nil
			for _, dc := range []string{dataCenter, dc2} {
				d := DCResult{DC: dc, BoundSeconds: r.BoundSeconds}
				if dc == dc2 {
					d.BoundSeconds = max(d.BoundSeconds, seconds(r.Config.Size, r.Config.WANMbit))
				}
				var ts []float64
				for _, h := range m.Hosts {
					if h.DC == dc && !h.Killed {
						ts = append(ts, h.Seconds)
						d.LastSeconds = max(d.LastSeconds, h.Seconds)
					}
				}
				d.Hosts, d.P50Seconds = len(ts), median(ts)
				d.RatioToBound = d.LastSeconds / d.BoundSeconds
				m.DCs = append(m.DCs, d)
			}
		}
	}
	r.Checks = nil
	rack := r.mode(ModeRack)
	if rack == nil || rack.Err != "" {
		return
	}
	hosts := r.Config.Racks * r.Config.Hosts
	r.Checks = append(r.Checks,
		Check{What: "rack: all hosts / bound", Got: rack.RatioToBound, Limit: fmt.Sprintf("<= %.2f", targetBound), OK: rack.RatioToBound <= targetBound},
		Check{What: "rack: median host / bound", Got: rack.P50Seconds / r.BoundSeconds, Limit: fmt.Sprintf("<= %.2f", targetMedian), OK: rack.P50Seconds/r.BoundSeconds <= targetMedian},
		Check{What: "rack: bytes into racks / (S x racks)", Got: rack.IntoRacksRatio, Limit: fmt.Sprintf("<= %.2f", targetCross), OK: rack.IntoRacksRatio <= targetCross},
	)
	if a := r.mode(ModeAria2); a != nil && a.Err == "" && rack.Seconds > 0 {
		sp := a.Seconds / rack.Seconds
		r.Checks = append(r.Checks, Check{What: "aria2c+opentracker time / rack time", Got: sp, Limit: fmt.Sprintf(">= %.2f", targetAria2), OK: sp >= targetAria2})
	}
	for _, fm := range []string{ModeKillChain, ModeKillGW} {
		if f := r.mode(fm); f != nil {
			got := f.Seconds / rack.Seconds
			r.Checks = append(r.Checks, Check{What: fm + ": survivors' time / rack time", Got: got, Limit: fmt.Sprintf("<= %.2f", targetFault), OK: f.Err == "" && got <= targetFault})
			// The same question within one mode: the fault rack against the
			// racks without a fault, which ran at the same time on the same
			// (shared, variably busy) machine.
			if fr, other := f.faultRackRatio(); fr > 0 {
				r.Checks = append(r.Checks, Check{What: fm + ": fault rack's last host / other racks' last host (same run)", Got: fr / other, Limit: fmt.Sprintf("<= %.2f", targetFault), OK: f.Err == "" && fr/other <= targetFault})
			}
		}
	}
	if f := r.mode(ModeKillOrigin); f != nil {
		r.Checks = append(r.Checks, Check{What: "kill-origin: hosts completed and verified", Got: float64(f.Verified), Limit: fmt.Sprintf("= %d", hosts), OK: f.Err == "" && f.Verified == hosts})
	}
	if w := r.mode(ModeWAN); w != nil {
		got := float64(w.WANBytes) / float64(r.Config.Size)
		r.Checks = append(r.Checks, Check{What: "wan: bytes across the WAN / S (one copy for dc2)", Got: got, Limit: fmt.Sprintf("<= %.2f", targetWAN), OK: w.Err == "" && got <= targetWAN})
		for _, d := range w.DCs {
			r.Checks = append(r.Checks, Check{What: "wan: " + d.DC + " last host / its bound", Got: d.RatioToBound, Limit: fmt.Sprintf("<= %.2f", targetBound), OK: w.Err == "" && d.RatioToBound <= targetBound})
		}
	}
	if central := r.mode(ModeCentral); central != nil && central.Err == "" && rack.Seconds > 0 {
		sp := central.Seconds / rack.Seconds
		r.Checks = append(r.Checks, Check{What: "central time / rack-aware time", Got: sp, Limit: fmt.Sprintf(">= %.1f", targetSpeedup), OK: sp >= targetSpeedup})
	}
}

// faultRackRatio returns the last host of the rack that had a killed host
// and the last host of the other racks (0, 0 without both).
func (m *ModeResult) faultRackRatio() (fault, other float64) {
	rack := ""
	for _, h := range m.Hosts {
		if h.Killed {
			rack = h.Rack
		}
	}
	if rack == "" {
		return 0, 0
	}
	for _, rr := range m.Racks {
		if rr.Rack == rack {
			fault = rr.LastSeconds
		} else {
			other = max(other, rr.LastSeconds)
		}
	}
	if other == 0 {
		return 0, 0
	}
	return fault, other
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func (r *Result) mode(name string) *ModeResult {
	for i := range r.Modes {
		if r.Modes[i].Mode == name {
			return &r.Modes[i]
		}
	}
	return nil
}

// Markdown renders the run as a markdown section.
func (r *Result) Markdown() string {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "## distrib benchmark %s\n\n", r.Date.Format("2006-01-02 15:04 UTC"))
	data, cc := "on the machine's disk", c.CC
	if c.Tmpfs {
		data = "on a tmpfs (one disk per host, as in a fleet)"
	}
	if cc == "" {
		cc = distrib.DefaultCongestionControl
	}
	fmt.Fprintf(&b, "%d racks x %d hosts, blob %s, host link %g Mbit/s, rack uplink %g Mbit/s, seeder %g Mbit/s (seeder on the core switch), MTU %d, piece length %s; hosts' data %s; dcroll's TCP congestion control %s (aria2c: the kernel's).\n\n",
		c.Racks, c.Hosts, human(c.Size), c.HostMbit, c.UplinkMbit, c.SeederMbit, c.MTU, pieceLen(c.PieceLength), data, cc)
	fmt.Fprintf(&b, "Lower bound S/min(host, uplink) = %.1f s; central copy's own bound N*S/seeder = %.1f s; one copy per rack = S x %d = %s.\n\n",
		r.BoundSeconds, r.CentralBoundSeconds, c.Racks, human(r.OneCopyPerRack))
	b.WriteString("| mode | all hosts (s) | median host (s) | x bound | median x bound | into racks | x (S x racks) | seeder sent (x S) | bench CPU (cores) | machine CPU busy | verified | sources | fault |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, m := range r.Modes {
		if m.Err != "" {
			fmt.Fprintf(&b, "| %s | failed: %s | | | | | | | | | %d/%d | | %s |\n", m.Mode, oneLine(m.Err), m.Verified, c.Racks*c.Hosts, m.Fault)
			continue
		}
		survivors := 0
		for _, h := range m.Hosts {
			if !h.Killed {
				survivors++
			}
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.2f | %.2f | %s | %.2f | %.2f | %.2f | %.0f %% | %d/%d | %s | %s |\n",
			m.Mode, m.Seconds, m.P50Seconds, m.RatioToBound, m.P50Seconds/r.BoundSeconds, human(m.IntoRacksBytes), m.IntoRacksRatio,
			float64(m.SeederSentBytes)/float64(c.Size), m.ProcCPUSeconds/max(m.Seconds, 1e-9), m.CPUBusy*100, m.Verified, survivors, sources(m.Sources), m.Fault)
	}
	b.WriteString("\nMedian host timeline (swarm modes, from the hosts' progress lines every 250 ms): first byte / half the blob / done.\n\n| mode | first byte (s) | half (s) | done (s) |\n|---|---:|---:|---:|\n")
	for _, m := range r.Modes {
		if m.Err == "" && m.P50HalfSeconds > 0 {
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f |\n", m.Mode, m.P50FirstByteSeconds, m.P50HalfSeconds, m.P50Seconds)
		}
	}
	if m := r.mode(ModeRack); m != nil && m.Err == "" {
		b.WriteString("\nrack mode, every host in its rack's chain order (by first byte): first byte / half / done (s), bytes from its rack / the origin.\n\n| rack | hosts |\n|---|---|\n")
		for _, rack := range r.rackNames() {
			var hs []HostResult
			for _, h := range m.Hosts {
				if h.Rack == rack {
					hs = append(hs, h)
				}
			}
			slices.SortFunc(hs, func(a, b HostResult) int { return cmp.Compare(a.FirstByteSeconds, b.FirstByteSeconds) })
			var cells []string
			for _, h := range hs {
				cells = append(cells, fmt.Sprintf("%s %.1f/%.1f/%.1f %s/%s", h.Machine, h.FirstByteSeconds, h.HalfSeconds, h.Seconds, human(h.FromRack), human(h.FromOther)))
			}
			fmt.Fprintf(&b, "| %s | %s |\n", rack, strings.Join(cells, " → "))
		}
	}
	if w := r.mode(ModeWAN); w != nil && w.Err == "" {
		delay := fmt.Sprintf("%s delay each way (netem)", c.WANDelay)
		if !w.WANDelayed {
			delay = "no added delay (this kernel has no sch_netem)"
		}
		fmt.Fprintf(&b, "\nwan: %s in dc1 with the origin, racks %s in dc2 behind a %g Mbit/s WAN, %s. Across the WAN toward dc2: %s = %.2f x S.\n\n",
			"r0", strings.Join(r.rackNames()[1:], ", "), c.WANMbit, delay, human(w.WANBytes), float64(w.WANBytes)/float64(c.Size))
		b.WriteString("| dc | hosts | last host (s) | median (s) | its bound (s) | x bound |\n|---|---:|---:|---:|---:|---:|\n")
		for _, d := range w.DCs {
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %.2f |\n", d.DC, d.Hosts, d.LastSeconds, d.P50Seconds, d.BoundSeconds, d.RatioToBound)
		}
	}
	b.WriteString("\nPer rack: last host done (s) / bytes into the rack / those bytes at the uplink rate (s); equal times mean the uplink was the bottleneck.\n\n")
	b.WriteString("| mode | " + strings.Join(r.rackNames(), " | ") + " |\n|---|" + strings.Repeat("---|", len(r.rackNames())) + "\n")
	for _, m := range r.Modes {
		if m.Err != "" {
			continue
		}
		fmt.Fprintf(&b, "| %s |", m.Mode)
		for _, rr := range m.Racks {
			fmt.Fprintf(&b, " %.1f / %s / %.1f |", rr.LastSeconds, human(rr.IntoBytes), rr.UplinkSeconds)
		}
		b.WriteString("\n")
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n| target | got | want | |\n|---|---:|---|---|\n")
		for _, ch := range r.Checks {
			mark := "met"
			if !ch.OK {
				mark = "MISSED"
			}
			fmt.Fprintf(&b, "| %s | %.2f | %s | %s |\n", ch.What, ch.Got, ch.Limit, mark)
		}
	}
	return b.String()
}

// Write stores distrib-<date>.json and .md in dir.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	base := filepath.Join(dir, "distrib-"+r.Date.Format("20060102-150405"))
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(base+".md", []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintf(os.Stderr, "results: %s.{json,md}\n", base)
	return nil
}

func (r *Result) rackNames() []string {
	var names []string
	for i := range r.Config.Racks {
		names = append(names, fmt.Sprintf("r%d", i))
	}
	return names
}

func sources(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func pieceLen(n int64) string {
	if n == 0 {
		return "default"
	}
	return human(n)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}
