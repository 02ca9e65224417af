package spec

import (
	"strings"
	"testing"
)

// TestDomainsAndWaves: parsed, kept by the canonical form (and
// FromCanonical), absent from it when unset (old spec ids unchanged),
// validated with line-precise errors and "did you mean".
func TestDomainsAndWaves(t *testing.T) {
	plain := mustParse(t, progressBase)
	if c := string(plain.Canonical()); strings.Contains(c, "domain") || strings.Contains(c, "waves") {
		t.Fatalf("unset domain/waves in the canonical form: %s", c)
	}
	for _, tc := range []struct {
		in        string
		domain    string
		waves     string // Waves.String()
		canonical string
	}{
		{"    domain: rack\n", "rack", "", `"domain":"rack"`},
		{"    domain: pdu\n    waves: dc\n", "pdu", "dc", `"domain":"pdu","waves":"dc"`},
		{"    waves: [dc-east, dc-west]\n", "", "[dc-east, dc-west]", `"waves":["dc-east","dc-west"]`},
		{"    waves:\n      - par1\n      - ams2\n", "", "[par1, ams2]", `"waves":["par1","ams2"]`},
	} {
		sp, err := Parse("p.yaml", []byte(progressBase+tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		svc := sp.Services["db"]
		if svc.Domain != tc.domain || svc.Waves.String() != tc.waves {
			t.Errorf("%q: domain %q waves %q, want %q %q", tc.in, svc.Domain, svc.Waves.String(), tc.domain, tc.waves)
		}
		if c := string(sp.Canonical()); !strings.Contains(c, tc.canonical) {
			t.Errorf("%q: canonical %s lacks %s", tc.in, c, tc.canonical)
		}
		back, err := FromCanonical(sp.Canonical())
		if err != nil || back.ID() != sp.ID() {
			t.Errorf("%q: FromCanonical: %v", tc.in, err)
		} else if back.Services["db"].Waves.String() != tc.waves {
			t.Errorf("%q: waves back %q", tc.in, back.Services["db"].Waves.String())
		}
		if sp.ID() == plain.ID() {
			t.Errorf("%q: same id as without it", tc.in)
		}
		if cl := sp.Clone(); svc.Waves != nil && (cl.Services["db"].Waves == svc.Waves ||
			len(svc.Waves.Order) > 0 && &cl.Services["db"].Waves.Order[0] == &svc.Waves.Order[0]) {
			t.Errorf("%q: Clone shares the waves", tc.in)
		}
	}
	if w := (&Waves{}); !w.ByName() || (&Waves{Order: []string{"a"}}).ByName() {
		t.Error("ByName")
	}

	for in, want := range map[string]string{
		"    domain: racks\n":                  `p.yaml:7: services.db.domain: unknown label "racks" (did you mean "rack"?)`,
		"    domain: datacenter\n":             `did you mean "dc"?`,
		"    domain: Rack\n":                   `p.yaml:7: services.db.domain: "Rack" is not a label name (did you mean "rack"?)`,
		"    domain: \"\"\n":                   `p.yaml:7: services.db.domain: empty`,
		"    domain: [rack]\n":                 `p.yaml:7: services.db.domain: expected a string, got a list`,
		"    domian: rack\n":                   `p.yaml:7: services.db: unknown field "domian" (did you mean "domain"?)`,
		"    wave: dc\n":                       `did you mean "waves"?`,
		"    waves: dcs\n":                     `p.yaml:7: services.db.waves: "dcs" is not a wave order (did you mean "dc"?)`,
		"    waves: datacenters\n":             `write "dc" (every data center, by name) or a list`,
		"    waves: []\n":                      `p.yaml:7: services.db.waves: empty list`,
		"    waves: [dc-east, dc-east]\n":      `p.yaml:7: services.db.waves: "dc-east" is listed twice`,
		"    waves:\n      - a\n      - b/c\n": `p.yaml:9: services.db.waves: "b/c" is not a data center name`,
		"    waves: {dc: 1}\n":                 `p.yaml:7: services.db.waves: expected "dc" or a list of data centers`,
	} {
		_, err := Parse("p.yaml", []byte(progressBase+in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", in, err, want)
		}
	}
	// Custom labels are fine: they come from the agents' config.
	for _, d := range []string{"pdu", "power-feed", "dc", "rack", "zone_2"} {
		if _, err := Parse("p.yaml", []byte(progressBase+"    domain: "+d+"\n")); err != nil {
			t.Errorf("domain %s: %v", d, err)
		}
	}
	// Canonical JSON with a bad waves string is refused.
	c := strings.Replace(string(mustParse(t, progressBase+"    waves: dc\n").Canonical()), `"waves":"dc"`, `"waves":"zone"`, 1)
	if _, err := FromCanonical([]byte(c)); err == nil || !strings.Contains(err.Error(), "waves") {
		t.Errorf("FromCanonical of waves \"zone\": %v", err)
	}
}
