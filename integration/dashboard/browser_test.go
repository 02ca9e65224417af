package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Chromium. Without one the tests skip, saying how to
// install it; under CI (CI set) a missing Chromium fails them instead, so
// CI cannot pass by testing nothing.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("DCROLL_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "install Debian's chromium (apt-get install chromium; scripts/install-deps.sh does) or point DCROLL_CHROMIUM at a Chromium binary"
	if os.Getenv("CI") != "" {
		t.Fatalf("chromium not found and CI=%s: the dashboard tests must run in CI: %s", os.Getenv("CI"), how)
	}
	t.Skipf("chromium not found: %s (with CI set this is a failure)", how)
	return ""
}

// browser is one headless Chromium tab, closed at the test's end.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab's context; actions derive timeouts from it
	close func()          // stops the browser (idempotent)
}

// newBrowser starts headless Chromium (no sandbox: tests run as root) with
// a desktop-sized window.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	stop := func() { cancel(); cancelAlloc() }
	t.Cleanup(stop)
	// The first action starts the browser; it must run without a timeout
	// (a timeout on it would stop the whole browser when it fires).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return &browser{t: t, ctx: ctx, close: stop}
}

// navigate loads url and waits for the page's script to have run.
func (b *browser) navigate(url string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("navigate %s: %v", url, err)
	}
	b.waitJS(30*time.Second, "the dashboard script", "window.__dcroll !== undefined")
}

// eval evaluates a JavaScript expression and decodes its value.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true or timeout passes;
// on timeout it saves a screenshot and fails with what the page says.
func (b *browser) waitJS(timeout time.Duration, what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		path := b.screenshot("failed-" + slug(what))
		text := b.pageText()
		b.t.Fatalf("waiting %s for %s (%s): %v\nscreenshot: %s\npage text:\n%s", timeout, what, cond, err, path, text)
	}
}

// pageText is the page's visible text, shortened, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	if err != nil {
		return fmt.Sprintf("(page text unreadable: %v)", err)
	}
	if len(text) > 3000 {
		text = text[:3000] + "…"
	}
	return text
}

// text is the text content of the first element matching a CSS selector
// ("" when there is none).
func (b *browser) text(selector string) string {
	b.t.Helper()
	sel, _ := json.Marshal(selector)
	return eval[string](b, fmt.Sprintf("(document.querySelector(%s) || {}).textContent || ''", sel))
}

// artifactsDir is where screenshots go: $DCROLL_TEST_ARTIFACTS, else
// $TMPDIR/dcroll-artifacts/dashboard.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("DCROLL_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "dcroll-artifacts", "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	return dir
}

// screenshot saves a full-page PNG as a test artifact and logs its path.
func (b *browser) screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(artifactsDir(b.t), "dashboard-"+slug(b.t.Name())+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("save screenshot: %v", err)
		return ""
	}
	b.t.Logf("screenshot %s: %s", name, path)
	return path
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, s)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
