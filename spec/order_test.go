package spec

import (
	"errors"
	"strings"
	"testing"
)

// deps builds a spec from "name:dep,dep" items for Order and Plan tests.
func deps(items ...string) *Spec {
	s := &Spec{Name: "t", Services: map[string]*Service{}}
	for _, it := range items {
		name, ds, _ := strings.Cut(it, ":")
		svc := &Service{Version: "1", Artifact: blobA, Run: []string{"./" + name}}
		if ds != "" {
			svc.DependsOn = strings.Split(ds, ",")
		}
		s.Services[name] = svc
	}
	return s
}

func TestOrder(t *testing.T) {
	tests := []struct {
		items []string
		want  string // joined order, or the cycle error
	}{
		{[]string{"c", "b", "a"}, "a b c"},   // ties by name
		{[]string{"api:db", "db"}, "db api"}, // deps first
		{[]string{"api:db,cache", "db", "cache", "web:api", "aux"}, "aux cache db api web"},
		{[]string{"z", "y:z", "a:y"}, "z y a"}, // name order only among ready ones
		{[]string{"b:a", "c:a", "a", "d:b,c"}, "a b c d"},
		{[]string{"a:b", "b:a"}, "dependency cycle: a -> b -> a"},
		{[]string{"x", "c:d", "d:e", "e:c", "f:c"}, "dependency cycle: c -> d -> e -> c"},
		{[]string{"a:a"}, "dependency cycle: a -> a"},
		{[]string{"m:n", "n:o", "o:n"}, "dependency cycle: n -> o -> n"}, // m only leads into the cycle
	}
	for _, tt := range tests {
		got, err := deps(tt.items...).Order()
		var ce *CycleError
		switch {
		case err != nil && errors.As(err, &ce):
			if ce.Error() != tt.want {
				t.Errorf("%v: error %q, want %q", tt.items, ce, tt.want)
			}
		case err != nil:
			t.Errorf("%v: %v", tt.items, err)
		case strings.Join(got, " ") != tt.want:
			t.Errorf("%v: order %v, want %s", tt.items, got, tt.want)
		}
	}
	if _, err := deps("a:nope").Order(); err == nil || !strings.Contains(err.Error(), `unknown service "nope"`) {
		t.Errorf("unknown dep: %v", err)
	}
}
