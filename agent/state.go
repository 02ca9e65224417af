package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"time"

	"dcroll/spec"
)

// stateSchema is the "v" of state.json.
const stateSchema = 1

// Release is one runnable version of a service on this machine: the
// unpacked artifact, the data blobs and how to run and check it. It is
// everything needed to start it again without ZooKeeper.
type Release struct {
	Version      string            `json:"version"`
	Build        string            `json:"build"`
	SpecID       string            `json:"spec_id"`
	Dir          string            `json:"dir"`
	Run          []string          `json:"run"`
	Data         []string          `json:"data,omitempty"` // local paths of the data blobs
	DataIDs      []string          `json:"data_ids,omitempty"`
	Artifact     string            `json:"artifact"`
	Health       *spec.Health      `json:"health,omitempty"`
	Settings     map[string]string `json:"settings,omitempty"`
	ReloadSignal string            `json:"reload_signal,omitempty"`
}

// State is <data-dir>/<service>/state.json: what this machine runs, written
// before every change so the agent boots its last version without
// ZooKeeper and finishes an interrupted step after kill -9.
type State struct {
	V       int    `json:"v"`
	Service string `json:"service"`
	// Current is the release running (or being started); nil: none.
	Current *Release `json:"current,omitempty"`
	// Previous is the release that ran before Current (the revert target).
	Previous *Release `json:"previous,omitempty"`
	// InFlight is a step begun and not finished.
	InFlight *Step `json:"in_flight,omitempty"`
	// PendingHalt is a halt this machine owes the queue, not yet written.
	PendingHalt *PendingHalt `json:"pending_halt,omitempty"`
	// Known are releases unpacked here, by version label.
	Known map[string]*Release `json:"known,omitempty"`
	// Updated is when the file was written.
	Updated time.Time `json:"updated"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// LoadState reads dir/state.json; a missing file is an empty state.
func LoadState(dir, service string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{V: stateSchema, Service: service}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read state %s: %w (move it away to start from scratch)", statePath(dir), err)
	}
	if st.V > stateSchema {
		return nil, fmt.Errorf("read state %s: schema %d is newer than this agent (%d): upgrade dcroll", statePath(dir), st.V, stateSchema)
	}
	st.Service = service
	return &st, nil
}

// Save writes the state atomically (temp file, fsync, rename).
func (st *State) Save(dir string, now time.Time) error {
	st.V = stateSchema
	st.Updated = now.UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := writeFileAtomic(statePath(dir), append(b, '\n')); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with b: a temp file in the same
// directory, fsynced, renamed over path. A crash leaves the old or the new
// content, never a mix.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// clone is a copy of st that changes to the copy do not reach: the
// struct, its Known map and its step and halt records (Releases are never
// changed in place, so they are shared).
func (st *State) clone() *State {
	c := *st
	c.Known = maps.Clone(st.Known)
	if st.InFlight != nil {
		f := *st.InFlight
		c.InFlight = &f
	}
	if st.PendingHalt != nil {
		h := *st.PendingHalt
		c.PendingHalt = &h
	}
	return &c
}

// remember records r as known locally.
func (st *State) remember(r *Release) {
	if r == nil {
		return
	}
	if st.Known == nil {
		st.Known = map[string]*Release{}
	}
	st.Known[r.Version] = r
}

// knownVersions maps known version labels to their spec ids (Local.Known).
func (st *State) knownVersions() map[string]string {
	m := make(map[string]string, len(st.Known))
	for v, r := range st.Known {
		if _, err := os.Stat(r.Dir); err == nil {
			m[v] = r.SpecID
		}
	}
	return m
}

// prune keeps the known releases named in keep plus the newest others up to
// limit entries.
func (st *State) prune(limit int) {
	if len(st.Known) <= limit {
		return
	}
	keep := map[string]bool{}
	for _, r := range []*Release{st.Current, st.Previous} {
		if r != nil {
			keep[r.Version] = true
		}
	}
	var others []string
	for v := range st.Known {
		if !keep[v] {
			others = append(others, v)
		}
	}
	sort.Strings(others)
	for len(st.Known) > limit && len(others) > 0 {
		delete(st.Known, others[0])
		others = others[1:]
	}
}
