// Package supervise runs one version of one service on one machine: it
// unpacks the artifact, starts the process, restarts it when it crashes,
// tells when it is healthy, delivers settings, and stops it.
//
// The agent drives it, per upgrade step:
//
//	dir, _ := supervise.Unpack(ctx, blobPath, root, svc.Version, svc.Run[0])
//	_ = supervise.WriteSettings(settingsPath, svc.Settings)
//	s, _ := supervise.New(supervise.Config{Dir: dir, Run: svc.Run, Service: name,
//		Version: svc.Version, Machine: me, SettingsFile: settingsPath,
//		Data: dataPaths, Env: []string{"DCROLL_PORT=8080"}, LogPath: logPath})
//	adopted, _ := s.StartOrAdopt()         // adopt what a previous agent left running
//	chk, _ := s.Checker(svc.Health)
//	err := supervise.WaitHealthy(ctx, chk, s.Exited(), minHealthy, deadline, interval)
//	...
//	_ = supervise.WriteSettings(settingsPath, newSettings); _ = s.Reload(syscall.SIGHUP)
//	_ = s.Stop(ctx)                        // SIGTERM, grace, SIGKILL
//
// # Processes outlive the agent
//
// The process runs in its own process group (signals go to the group) with
// no parent-death signal, so killing the agent (even with SIGKILL) leaves
// the service running. Each start writes a PID file (PID, /proc start time,
// command line); a restarted agent calls Adopt or StartOrAdopt, which take
// the process over only if it is still the same process (PID, start time and
// command line all match, so a recycled PID is never mistaken for it).
// Stdout and stderr should go to a file (Config.LogPath), not through the
// agent. Detach leaves a process running on purpose (agent shutdown).
//
// # Environment
//
// The process gets the agent's environment plus DCROLL_VERSION,
// DCROLL_SERVICE, DCROLL_MACHINE, DCROLL_SETTINGS (a JSON object of strings,
// replaced atomically by WriteSettings; reload on the reload signal) and
// DCROLL_DATA (data blob paths, colon-separated), then Config.Env.
// ${VAR} (or $VAR) in the run command line and in the health check's URL,
// address and command is expanded from that environment; "$$" is a literal
// "$" and an unset variable is an error. This lets several instances share a
// host: each agent passes its own DCROLL_PORT and the spec says
//
//	run: ["./hello", "--port=${DCROLL_PORT}"]
//	health: {http: "http://127.0.0.1:${DCROLL_PORT}/healthz"}
//
// # Health
//
// The health rule is written once, in Tracker (a pure state machine fed
// one probe at a time, table-tested): healthy once a Checker (HTTP 2xx,
// TCP connect or command exit 0, from spec.Health) has passed
// continuously for min_healthy; a healthy service turns unhealthy after
// UnhealthyAfter failed probes in a row, at once if its process dies; a
// step's wait fails at its deadline naming the last failure. Probes come
// FirstProbe after a start, doubling up to the interval. The agent's step
// wait and steady-state loop drive it on the agent's clock; WaitHealthy
// drives it on the wall clock. Without a health check, running for
// min_healthy is healthy.
package supervise
