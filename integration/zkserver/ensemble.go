package zkserver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrNoLeader is returned by Leader when no running member leads.
var ErrNoLeader = errors.New("zookeeper ensemble has no leader")

// Ensemble is n servers forming one quorum on loopback. Servers[i] has
// myid i+1 and lives in Options.Dir/node<i+1>.
type Ensemble struct {
	Servers []*Server
}

// StartEnsemble starts n servers and returns once all of them serve and one
// leads (at most 45s, or until ctx ends). On a port clash it starts over on
// other ports. A one-node ensemble runs in quorum mode and leads itself.
func StartEnsemble(ctx context.Context, n int, opts Options) (*Ensemble, error) {
	if n < 1 {
		return nil, fmt.Errorf("zkserver: ensemble of %d servers", n)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	inst, err := findInstallation(opts.Java)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		e, err := startEnsemble(ctx, n, opts, inst)
		if err == nil {
			return e, nil
		}
		if errors.Is(err, errPortInUse) && attempt < bindAttempts {
			continue
		}
		return nil, err
	}
}

func startEnsemble(ctx context.Context, n int, opts Options, inst installation) (*Ensemble, error) {
	per := 3 // client, quorum and election ports
	if opts.TLS != nil {
		per = 4 // and the secure client port
	}
	ports, err := pickPorts(per * n)
	if err != nil {
		return nil, err
	}
	peers := make([]peer, n)
	for i := range peers {
		peers[i] = peer{id: i + 1, clientPort: ports[per*i], quorumPort: ports[per*i+1], electPort: ports[per*i+2]}
		if opts.TLS != nil {
			peers[i].securePort = ports[per*i+3]
		}
	}
	e := &Ensemble{}
	for _, p := range peers {
		dir := filepath.Join(opts.Dir, fmt.Sprintf("node%d", p.id))
		e.Servers = append(e.Servers, newServer(nodeConfig{
			opts: opts, dir: dir, clientPort: p.clientPort, securePort: p.securePort, id: p.id, peers: peers,
		}, inst))
	}
	ctx, cancel := context.WithTimeout(ctx, ensembleTimeout)
	defer cancel()
	err = e.start(ctx)
	if err == nil {
		_, err = e.WaitLeader(ctx)
	}
	if err != nil {
		for _, s := range e.Servers {
			s.Kill()
		}
		return nil, err
	}
	return e, nil
}

// start launches all members, then waits for each to serve; the first error
// (by member order) wins, a port clash before anything else.
func (e *Ensemble) start(ctx context.Context) error {
	for _, s := range e.Servers {
		if err := s.launch(); err != nil {
			return err
		}
	}
	errs := make([]error, len(e.Servers))
	var wg sync.WaitGroup
	for i, s := range e.Servers {
		wg.Go(func() { errs[i] = s.waitServing(ctx, ensembleTimeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if errors.Is(err, errPortInUse) {
			return err
		}
	}
	return errors.Join(errs...)
}

// ConnectString lists every member's client address:
// "127.0.0.1:a,127.0.0.1:b,...".
func (e *Ensemble) ConnectString() string {
	addrs := make([]string, len(e.Servers))
	for i, s := range e.Servers {
		addrs[i] = s.Addr()
	}
	return strings.Join(addrs, ",")
}

// SecureConnectString lists every member's TLS client address (their
// secureClientPort), or "" for an ensemble started without Options.TLS.
func (e *Ensemble) SecureConnectString() string {
	addrs := make([]string, 0, len(e.Servers))
	for _, s := range e.Servers {
		if a := s.SecureAddr(); a != "" {
			addrs = append(addrs, a)
		}
	}
	return strings.Join(addrs, ",")
}

// Leader asks every running member for its mode once and returns the index
// in Servers of the leader, or ErrNoLeader (for example during an election).
func (e *Ensemble) Leader(ctx context.Context) (int, error) {
	var errs []error
	for i, s := range e.Servers {
		if !s.Running() {
			continue
		}
		mode, err := s.Mode(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %d: %w", i, err))
			continue
		}
		if mode == "leader" {
			return i, nil
		}
	}
	if len(errs) > 0 {
		return -1, fmt.Errorf("%w (%w)", ErrNoLeader, errors.Join(errs...))
	}
	return -1, ErrNoLeader
}

// WaitLeader polls Leader until a member leads or ctx ends.
func (e *Ensemble) WaitLeader(ctx context.Context) (int, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		i, err := e.Leader(ctx)
		if err == nil {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("wait for leader: %w: %w", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Stop stops all members at the same time.
func (e *Ensemble) Stop() error {
	errs := make([]error, len(e.Servers))
	var wg sync.WaitGroup
	for i, s := range e.Servers {
		wg.Go(func() { errs[i] = s.Stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
