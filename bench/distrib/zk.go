package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// zkMain runs a standalone ZooKeeper bound to -listen (inside the zk
// namespace) until stdin closes. It starts the JVM itself because
// integration/zkserver binds 127.0.0.1, which other namespaces cannot reach.
func zkMain(args []string) error {
	fs := flag.NewFlagSet("zk", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory")
	listen := fs.String("listen", "", "ip:port to serve clients on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}
	if err := os.MkdirAll(filepath.Join(*dir, "data"), 0o755); err != nil {
		return err
	}
	cfgPath := filepath.Join(*dir, "zoo.cfg")
	cfg := fmt.Sprintf("tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%s\nclientPortAddress=%s\n"+
		"maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,mntr\n",
		filepath.Join(*dir, "data"), port, host)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	classpath := "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
	if cp := os.Getenv("ZK_CLASSPATH"); cp != "" {
		classpath = cp
	}
	java := exec.Command("java", "-Xmx256m", "-XX:+UseSerialGC", "-cp", classpath,
		"org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath)
	java.Stdout, java.Stderr = os.Stderr, os.Stderr
	java.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := java.Start(); err != nil {
		return fmt.Errorf("start java (is the zookeeper package installed?): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- java.Wait() }()
	defer func() {
		_ = java.Process.Kill()
	}()
	deadline := time.Now().Add(90 * time.Second)
	for !ruok(*listen) {
		select {
		case err := <-exited:
			return fmt.Errorf("zookeeper exited during start: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper not answering ruok on %s after 90s", *listen)
		}
	}
	emit(event{Event: "ready", Addr: *listen})
	stdinClosed := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
		}
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
		return nil
	case err := <-exited:
		return fmt.Errorf("zookeeper exited: %v", err)
	}
}

func ruok(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ruok")); err != nil {
		return false
	}
	buf := make([]byte, 8)
	n, _ := c.Read(buf)
	return strings.HasPrefix(string(buf[:n]), "imok")
}
