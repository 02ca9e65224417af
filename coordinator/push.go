package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// Sentinel errors callers branch on.
var (
	ErrRolloutInProgress = errors.New("a rollout is unfinished")
	ErrConcurrentPush    = errors.New("HEAD moved while this push was prepared")
	ErrNoPrevious        = errors.New("no previous spec to roll back to")
	ErrUnknownSpec       = errors.New("unknown spec")
	ErrMissingBlobs      = errors.New("blobs not published")
)

// PushOptions tune Push and Rollback.
type PushOptions struct {
	// Supersede replaces an unfinished rollout's queue instead of refusing.
	Supersede bool
	// DryRun computes and returns the plan but writes nothing.
	DryRun bool
	// By names who moved HEAD (default user@host).
	By string
	// Now is the clock (default time.Now).
	Now func() time.Time

	action   string
	extraOps []any // test hook: appended to the transaction
}

func (o *PushOptions) defaults() {
	if o.By == "" {
		o.By = whoAmI()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.action == "" {
		o.action = znodes.ActionPush
	}
}

func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// PushResult says what a push did (or would do, for a dry run).
type PushResult struct {
	SpecID     string        `json:"spec_id"`
	Name       string        `json:"name"`
	PrevID     string        `json:"prev_id,omitempty"`
	Unchanged  bool          `json:"unchanged"` // HEAD already pointed to this spec
	DryRun     bool          `json:"dry_run"`
	Superseded bool          `json:"superseded"`
	Plan       []spec.Change `json:"plan"`
	Queue      []string      `json:"queue"` // deploy entry znode names created
	Action     string        `json:"action"`
}

// Push makes sp the HEAD spec and queues its rollout, atomically.
func Push(ctx context.Context, c *znodes.Conn, sp *spec.Spec, o PushOptions) (*PushResult, error) {
	o.defaults()
	id := sp.ID()
	if err := c.EnsureSkeleton(); err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	p := c.Paths()
	head, headStat, err := ReadHead(c)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	res := &PushResult{SpecID: id, Name: sp.Name, DryRun: o.DryRun, Action: o.action}
	var cur *spec.Spec
	if head != nil {
		res.PrevID = head.SpecID
		if head.SpecID == id {
			res.Unchanged = true
			return res, nil
		}
		if cur, err = LoadSpec(c, head.SpecID); err != nil {
			return nil, fmt.Errorf("push %s: load HEAD spec: %w", spec.ShortID(id), err)
		}
	}
	plan, err := spec.Plan(cur, sp)
	if err != nil {
		return nil, fmt.Errorf("push %s: plan: %w", spec.ShortID(id), err)
	}
	res.Plan = plan

	missing, err := MissingBlobs(c, sp.Blobs())
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s (publish them first: dcroll blob publish FILE)", ErrMissingBlobs, strings.Join(missing, ", "))
	}

	queue, err := ReadQueue(c)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	var unfinished []string
	for _, e := range queue {
		if e.State != znodes.DeployDone {
			unfinished = append(unfinished, e.Service+"("+e.State+")")
		}
	}
	if len(unfinished) > 0 {
		if !o.Supersede {
			return nil, fmt.Errorf("%w: %s; wait for it, or replace it with --supersede", ErrRolloutInProgress, strings.Join(unfinished, ", "))
		}
		res.Superseded = true
	}
	if o.DryRun {
		return res, nil
	}

	now := o.Now().UTC()
	var ops []any
	specExists, _, err := c.ZK().Exists(p.Spec(id))
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	if !specExists {
		ops = append(ops, c.CreateOp(p.Spec(id), sp.Canonical(), 0))
	}
	newHead := &znodes.Head{SpecID: id, Name: sp.Name, By: o.By, At: now, Action: o.action}
	if head != nil {
		newHead.Prev = head.SpecID
		ops = append(ops, &zk.SetDataRequest{Path: p.Head(), Data: znodes.MustEncode(newHead), Version: headStat.Version})
	} else {
		ops = append(ops, c.CreateOp(p.Head(), znodes.MustEncode(newHead), 0))
	}
	var services []string
	for _, ch := range plan {
		if ch.Kind != spec.ChangeRemoved {
			services = append(services, ch.Service)
		}
	}
	ops = append(ops, c.CreateOp(p.HistoryEntryPrefix(), znodes.MustEncode(&znodes.HistoryEntry{
		Action: o.action, From: res.PrevID, To: id, Name: sp.Name, By: o.By, At: now,
		Services: services, Superseded: res.Superseded,
	}), zk.FlagSequence))
	for _, e := range queue {
		ops = append(ops, &zk.DeleteRequest{Path: p.DeployEntry(e.Node), Version: e.ZVersion})
	}
	for _, ch := range plan {
		if ch.Kind == spec.ChangeRemoved {
			continue
		}
		ops = append(ops, c.CreateOp(p.DeployEntryPrefix(), znodes.MustEncode(&znodes.DeployEntry{
			Service: ch.Service, Version: ch.To, FromVersion: ch.From, SpecID: id, Kind: string(ch.Kind),
			State: znodes.DeployPending, Updated: now, SettingsOnly: ch.Kind == spec.ChangeSettings,
		}), zk.FlagSequence))
	}
	budgetOps, err := missingBudgets(c, sp, now)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", spec.ShortID(id), err)
	}
	ops = append(ops, budgetOps...)
	ops = append(ops, o.extraOps...)

	resp, err := c.Multi(ops...)
	if err != nil {
		if errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNodeExists) || errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("%w (%v): nothing was changed; run the command again", ErrConcurrentPush, err)
		}
		return nil, fmt.Errorf("push %s: nothing was changed: %w", spec.ShortID(id), err)
	}
	for i, r := range resp {
		if cr, ok := ops[i].(*zk.CreateRequest); ok && strings.HasPrefix(cr.Path, p.DeployEntryPrefix()) {
			res.Queue = append(res.Queue, r.String[strings.LastIndex(r.String, "/")+1:])
		}
	}
	return res, nil
}

func missingBudgets(c *znodes.Conn, sp *spec.Spec, now time.Time) ([]any, error) {
	names := make([]string, 0, len(sp.Services))
	for name := range sp.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	var ops []any
	for _, name := range names {
		p := c.Paths().Budget(name)
		ok, _, err := c.ZK().Exists(p)
		if err != nil {
			return nil, fmt.Errorf("budget %s: %w", name, err)
		}
		if !ok {
			ops = append(ops, c.CreateOp(p, znodes.MustEncode(&znodes.Budget{Service: name, At: now}), 0))
		}
	}
	return ops, nil
}

// Rollback moves HEAD to spec toID (the previous HEAD when empty) through
// the same atomic path as a push. It always supersedes an unfinished rollout:
// rolling back is how a halted rollout is abandoned.
func Rollback(ctx context.Context, c *znodes.Conn, toID string, o PushOptions) (*PushResult, error) {
	head, _, err := ReadHead(c)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	if toID == "" {
		if head == nil || head.Prev == "" {
			return nil, fmt.Errorf("rollback: %w: HEAD has no predecessor; name a spec id (see dcroll history)", ErrNoPrevious)
		}
		toID = head.Prev
	}
	full, err := ResolveSpecID(c, toID)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	sp, err := LoadSpec(c, full)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	o.Supersede = true
	o.action = znodes.ActionRollback
	return Push(ctx, c, sp, o)
}
