package domains_test

import (
	"testing"

	"dcroll/spec"
)

// TestExampleParses: the example spec is valid and says what its comment
// says.
func TestExampleParses(t *testing.T) {
	s, err := spec.Load("nightly-domains.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store, web := s.Services["store"], s.Services["web"]
	if store.Domain != "rack" || store.Waves.String() != "[par1, ams2]" || store.MaxParallel != 50 {
		t.Errorf("store: domain %q waves %s max_parallel %d", store.Domain, store.Waves, store.MaxParallel)
	}
	if web.Domain != "pdu" || !web.Waves.ByName() {
		t.Errorf("web: domain %q waves %s", web.Domain, web.Waves)
	}
}
