package distrib

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"dcroll/integration/zkserver"
)

// One real ZooKeeper serves every test of the package; each test works
// under its own root (testConn). DISTRIB_TEST_ZK=host:port uses an external
// server instead.
var (
	sharedZK    string
	sharedZKErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if a := os.Getenv("DISTRIB_TEST_ZK"); a != "" {
		sharedZK = a
		return m.Run()
	}
	if testing.Short() {
		sharedZKErr = errors.New("needs a real ZooKeeper: skipped with -short")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "distrib-zk-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := zkserver.Start(ctx, zkserver.Options{Dir: dir})
	cancel()
	if err != nil {
		if errors.Is(err, zkserver.ErrNotInstalled) {
			sharedZKErr = err
			return m.Run()
		}
		fmt.Fprintf(os.Stderr, "start zookeeper: %v\n", err)
		return 1
	}
	defer s.Stop()
	sharedZK = s.Addr()
	return m.Run()
}

// zkAddr returns the shared ZooKeeper, or skips the test.
func zkAddr(t *testing.T) string {
	t.Helper()
	if sharedZK == "" {
		t.Skipf("no ZooKeeper: %v", sharedZKErr)
	}
	return sharedZK
}
