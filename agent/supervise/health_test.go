package supervise

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dcroll/integration/zktest"
	"dcroll/spec"
)

func dur(d time.Duration) spec.Duration { return spec.Duration{Duration: d} }

func TestWaitHealthy(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(func() { ok.Close() })
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
	}))
	t.Cleanup(func() { bad.Close() })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(func() { slow.Close() })
	var n atomic.Int64 // flapping: every third probe fails
	flap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(func() { flap.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closedPort := strconv.Itoa(zktest.FreePort(t))

	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "check.sh"), "#!/bin/sh\n[ \"$DCROLL_PORT\" = 9 ] && [ -e check.sh ]\n")
	env := []string{"DCROLL_PORT=9", "OK_URL=" + ok.URL}

	const timeout = 300 * time.Millisecond
	tests := []struct {
		name    string
		h       *spec.Health
		min     time.Duration
		wantErr string // "" = healthy
	}{
		{"http ok", &spec.Health{HTTP: "${OK_URL}/healthz", Timeout: dur(timeout)}, 100 * time.Millisecond, ""},
		{"http 503", &spec.Health{HTTP: bad.URL, Timeout: dur(timeout)}, 0, "503 Service Unavailable: database unreachable"},
		{"http too slow", &spec.Health{HTTP: slow.URL, Timeout: dur(timeout)}, 0, "deadline exceeded"},
		{"http flapping", &spec.Health{HTTP: flap.URL, Timeout: dur(timeout)}, 400 * time.Millisecond, "500 Internal Server Error"},
		{"http not long enough", &spec.Health{HTTP: ok.URL, Timeout: dur(timeout)}, time.Minute, "healthy for only"},
		{"tcp ok", &spec.Health{TCP: ln.Addr().String(), Timeout: dur(timeout)}, 50 * time.Millisecond, ""},
		{"tcp refused", &spec.Health{TCP: "127.0.0.1:" + closedPort, Timeout: dur(timeout)}, 0, "connection refused"},
		{"command ok", &spec.Health{Command: []string{"./check.sh"}, Timeout: dur(timeout)}, 50 * time.Millisecond, ""},
		{"command fails", &spec.Health{Command: []string{"/bin/sh", "-c", "echo not ready; exit 2"}, Timeout: dur(timeout)}, 0, "exit status 2: not ready"},
		{"command hangs", &spec.Health{Command: []string{"/bin/sh", "-c", "sleep 10"}, Timeout: dur(timeout)}, 0, "no answer within"},
		{"no check", nil, 100 * time.Millisecond, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewChecker(tc.h, dir, env)
			if err != nil {
				t.Fatal(err)
			}
			const deadline = time.Second
			start := time.Now()
			err = WaitHealthy(context.Background(), c, nil, tc.min, deadline, 20*time.Millisecond)
			el := time.Since(start)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("WaitHealthy: %v", err)
				}
				if el < tc.min {
					t.Errorf("healthy after %s, before min_healthy %s", el, tc.min)
				}
				return
			}
			if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("WaitHealthy = %v; want ErrUnhealthy naming %q", err, tc.wantErr)
			}
			if el < deadline {
				t.Errorf("gave up after %s, before the deadline %s", el, deadline)
			}
		})
	}
}

func TestWaitHealthyProcessExits(t *testing.T) {
	exited := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { close(exited) })
	c := &TCPChecker{Addr: "127.0.0.1:" + strconv.Itoa(zktest.FreePort(t)), Timeout: time.Second}
	start := time.Now()
	err := WaitHealthy(context.Background(), c, exited, time.Second, time.Minute, 20*time.Millisecond)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("WaitHealthy = %v, want ErrExited", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("noticed the exit after %s", el)
	}
}

func TestNewCheckerErrors(t *testing.T) {
	for _, h := range []*spec.Health{
		{HTTP: "http://127.0.0.1:${DCROLL_PORT}/healthz"},
		{TCP: "127.0.0.1:${DCROLL_PORT}"},
		{Command: []string{"./check", "${DCROLL_PORT}"}},
	} {
		if _, err := NewChecker(h, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "DCROLL_PORT") {
			t.Errorf("NewChecker(%+v) = %v, want an unset DCROLL_PORT error", h, err)
		}
	}
}
