package zkserver

import (
	"slices"
	"strings"
	"testing"
)

// TestExtraConfigAndJVMArgs: ExtraConfig lines come after the package's
// own (so they win), in key order; JVMArgs come after the default flags
// and before the class path.
func TestExtraConfigAndJVMArgs(t *testing.T) {
	opts, err := Options{Dir: "/z", ExtraConfig: map[string]string{"jute.maxbuffer": "4194304", "globalOutstandingLimit": "5000", "maxClientCnxns": "0"},
		JVMArgs: []string{"-Xmx2g"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodeConfig{opts: opts, dir: "/z", clientPort: 4000}.zooCfg()
	g, j, own := strings.Index(cfg, "globalOutstandingLimit=5000\n"), strings.Index(cfg, "jute.maxbuffer=4194304\n"), strings.Index(cfg, "forceSync=no\n")
	if g < 0 || j < 0 || own < 0 || !(own < g && g < j) {
		t.Errorf("extra lines missing or out of order (own %d, global %d, jute %d):\n%s", own, g, j, cfg)
	}
	args := nodeConfig{opts: opts, dir: "/z"}.javaArgs(installation{java: "java", classPath: []string{"zk.jar"}})
	x, def, cp := slices.Index(args, "-Xmx2g"), slices.Index(args, "-Xmx256m"), slices.Index(args, "-cp")
	if x < 0 || def < 0 || !(def < x && x < cp) {
		t.Errorf("JVM args: %q", args)
	}
	plain := nodeConfig{opts: Options{Dir: "/z"}, dir: "/z"}.javaArgs(installation{java: "java"})
	if slices.Contains(plain, "-Xmx2g") {
		t.Errorf("JVMArgs leak into a server without them: %q", plain)
	}
}
