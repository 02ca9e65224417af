package znodes

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// SchemaVersion is written in the "v" field of every payload. Readers refuse
// payloads with a newer major version than they know.
const SchemaVersion = 1

// Machine states in Current.State.
const (
	StateStarting  = "starting"  // agent up, service not yet healthy
	StateRunning   = "running"   // service running the version in Current.Version
	StateStaging   = "staging"   // fetching blobs of the next version
	StateUpgrading = "upgrading" // stopped the old version, starting the new one
	StateReverting = "reverting" // the new version failed; going back to the previous one
	StateFailed    = "failed"    // no version could be started
	StateStopped   = "stopped"   // agent holds no running service
)

// Deploy entry states in DeployEntry.State.
const (
	DeployPending = "pending"
	DeployRolling = "rolling"
	DeployHalted  = "halted"
	DeployDone    = "done"
)

// History actions in HistoryEntry.Action.
const (
	ActionPush     = "push"
	ActionRollback = "rollback"
)

// Head is the HEAD pointer at Paths.Head: the spec every agent converges to.
type Head struct {
	V      int       `json:"v"`
	SpecID string    `json:"spec_id"`        // sha256 hex of the canonical spec
	Name   string    `json:"name"`           // the spec's label
	Prev   string    `json:"prev,omitempty"` // spec id HEAD pointed to before
	By     string    `json:"by"`             // user@host that moved it
	At     time.Time `json:"at"`
	Action string    `json:"action"` // push or rollback
	// Seq numbers HEAD moves: every push and rollback writes a higher
	// one (above the previous, and at least the pusher's clock in
	// milliseconds), so a signed HEAD cannot be replayed later by writing
	// an older one back (agents remember the highest they accepted).
	Seq uint64 `json:"seq,omitempty"`
	// Signature signs SpecID and Seq (dcroll push --sign); agents with
	// --trust refuse a HEAD without a valid one.
	Signature *HeadSignature `json:"signature,omitempty"`
}

// HeadSignature is an ed25519 signature of a HEAD (see package
// dcroll/internal/sign for the signed message).
type HeadSignature struct {
	// KeyID names the public key: the first 16 hex digits of its sha256.
	KeyID string `json:"key_id"`
	// Sig is the signature (base64 in JSON).
	Sig []byte `json:"sig"`
}

// HistoryEntry records one HEAD move under Paths.History.
type HistoryEntry struct {
	V      int       `json:"v"`
	Action string    `json:"action"` // push or rollback
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Name   string    `json:"name"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	// Services lists the services the move put in the deploy queue, in order.
	Services []string `json:"services,omitempty"`
	// Superseded is true when the move replaced an unfinished rollout.
	Superseded bool `json:"superseded,omitempty"`
	// SupersededHalts names the halted entries the move replaced
	// ("store 3.0.0: halted on m2: ..."); they stay halted in the new queue
	// when the new spec keeps the same build.
	SupersededHalts []string `json:"superseded_halts,omitempty"`
	// Forced lists the bad builds the move was forced past (--force).
	Forced []string `json:"forced,omitempty"`
}

// DeployEntry is one service's step of the rollout queue under Paths.Deploy.
// Entries are processed strictly in sequence order; an entry is deleted when
// done only by the coordinator's compaction, so "done" entries may linger.
type DeployEntry struct {
	V            int       `json:"v"`
	Service      string    `json:"service"`
	Version      string    `json:"version"`                // target version
	FromVersion  string    `json:"from_version,omitempty"` // HEAD's version before the move
	SpecID       string    `json:"spec_id"`
	Kind         string    `json:"kind"` // spec.ChangeKind: new, upgrade, settings
	State        string    `json:"state"`
	Reason       string    `json:"reason,omitempty"`  // why halted
	Machine      string    `json:"machine,omitempty"` // the machine that halted it
	Updated      time.Time `json:"updated"`
	SettingsOnly bool      `json:"settings_only,omitempty"`
	// Build is the target build id (spec.Service.BuildID) of the entry's
	// version; "" for a removal.
	Build string `json:"build,omitempty"`
	// The canary phase (spec canary): BakeSince is when every canary was
	// first seen healthy on the target (written by the leading
	// coordinator; zero again if one falls out), Promoted when the rest
	// may step: the bake time passed (PromotedBy "bake") or an operator ran
	// dcroll promote (PromotedBy user@host).
	BakeSince  time.Time `json:"bake_since,omitzero"`
	Promoted   bool      `json:"promoted,omitempty"`
	PromotedBy string    `json:"promoted_by,omitempty"`
	PromotedAt time.Time `json:"promoted_at,omitzero"`
	// Upgrade domains and waves (spec domain, waves): the data center
	// (Wave) and the domain value (Domain) now open, written by the
	// leading coordinator (coordinator.OpenDomains); "" until it opened
	// the first. Only members of the open wave and domain step.
	Wave   string `json:"wave,omitempty"`
	Domain string `json:"domain,omitempty"`
}

// Deploy entry kinds beyond spec's new/upgrade/settings: a service removed
// from the spec is stopped machine by machine.
const KindRemoved = "removed"

// QueuedEntry is a deploy entry as read from the queue: its znode name and
// data version (for versioned sets) with the payload.
type QueuedEntry struct {
	// Node is the znode name under /dc/deploy (d-NNNNNNNNNN).
	Node string `json:"node"`
	// ZVersion is the znode data version.
	ZVersion int32 `json:"znode_version"`
	DeployEntry
}

// Control holds operator switches at Paths.Control.
type Control struct {
	V      int       `json:"v"`
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at"`
}

// Current is what one machine runs for one service, at Paths.CurrentMachine.
type Current struct {
	V       int       `json:"v"`
	Machine string    `json:"machine"`
	Service string    `json:"service"`
	Rack    string    `json:"rack"`
	DC      string    `json:"dc"`
	Version string    `json:"version"`           // version running (or being started)
	SpecID  string    `json:"spec_id,omitempty"` // spec the version came from
	State   string    `json:"state"`
	Healthy bool      `json:"healthy"`
	Since   time.Time `json:"since"` // when State last changed
	PID     int       `json:"pid,omitempty"`
	Detail  string    `json:"detail,omitempty"` // last error or note
	// Labels are the agent's labels (agent config labels:), for upgrade
	// domains; rack and dc are the fields above.
	Labels map[string]string `json:"labels,omitempty"`
}

// StagingEntry marks a machine ready to roll, at Paths.Staging.
type StagingEntry struct {
	V       int       `json:"v"`
	Machine string    `json:"machine"`
	Rack    string    `json:"rack"`
	Version string    `json:"version"`
	SpecID  string    `json:"spec_id"`
	At      time.Time `json:"at"`
}

// Turn is the payload of a turn-lock node under Paths.Turns.
type Turn struct {
	V       int       `json:"v"`
	Machine string    `json:"machine"`
	Rack    string    `json:"rack"`
	At      time.Time `json:"at"`
}

// Budget is the per-service quorum budget node at Paths.Budget. Its znode
// version is the fencing token: every spend is a Multi that checks it and
// bumps it.
type Budget struct {
	V       int       `json:"v"`
	Service string    `json:"service"`
	Last    string    `json:"last,omitempty"` // machine of the last spend
	At      time.Time `json:"at"`
	// Entry is the deploy entry of the last spend, Steps how many spends
	// it has had, and First the machines of its first spends (at most
	// BudgetFirst): a canary phase counts its canaries here, in the same
	// Multi as each spend, instead of reading the whole fleet.
	Entry string   `json:"entry,omitempty"`
	Steps int      `json:"steps,omitempty"`
	First []string `json:"first,omitempty"`
}

// BudgetFirst is how many machines Budget.First keeps.
const BudgetFirst = 16

// Spent returns the budget after machine's spend in entry at.
func (b Budget) Spent(machine, entry string, at time.Time) Budget {
	if b.Entry != entry {
		b.Entry, b.Steps, b.First = entry, 0, nil
	}
	b.Steps++
	if len(b.First) < BudgetFirst {
		b.First = append(slices.Clone(b.First), machine)
	}
	b.Last, b.At = machine, at
	return b
}

// StepsIn returns the spends of entry and its first machines (none when
// the last spend was for another entry).
func (b Budget) StepsIn(entry string) (int, []string) {
	if b.Entry != entry {
		return 0, nil
	}
	return b.Steps, b.First
}

// Down is the persistent step record of a machine that spent quorum budget
// and is out of service, at Paths.DownMachine. It outlives the agent's
// session: only the agent that took the step (once healthy again on the new
// or the reverted build, and once any halt it owes has landed) or an
// operator (dcroll machine clear) deletes it.
type Down struct {
	V       int       `json:"v"`
	Machine string    `json:"machine"`
	Rack    string    `json:"rack"`
	Kind    string    `json:"kind,omitempty"` // upgrade, settings or removed
	From    string    `json:"from"`
	To      string    `json:"to"`
	Entry   string    `json:"entry,omitempty"` // deploy entry node of the step
	Token   string    `json:"token,omitempty"` // random id of the step: tells a lost spend's outcome
	At      time.Time `json:"at"`
	// DC and Labels are the machine's (for one domain at a time: a turn
	// holder reads only the step record of a machine mid-step).
	DC     string            `json:"dc,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Agent describes a live agent at Paths.Agent.
type Agent struct {
	V        int       `json:"v"`
	Machine  string    `json:"machine"`
	Rack     string    `json:"rack"`
	DC       string    `json:"dc"`
	Services []string  `json:"services"`
	PeerAddr string    `json:"peer_addr,omitempty"` // BitTorrent listen address ip:port
	HTTPAddr string    `json:"http_addr,omitempty"` // metrics/status endpoint
	Version  string    `json:"agent_version,omitempty"`
	Since    time.Time `json:"since"`
	// LockedBytes is the memory the agent holds mlocked for blobs.
	LockedBytes int64 `json:"locked_bytes"`
}

// BlobProgress is one blob's download state in Progress.
type BlobProgress struct {
	Blob      string  `json:"blob"` // sha256:<hex>
	Bytes     int64   `json:"bytes"`
	Total     int64   `json:"total"`
	RateBps   float64 `json:"rate_bps"`
	Peers     int     `json:"peers"`
	Source    string  `json:"source"` // swarm, webseed, local
	Done      bool    `json:"done"`
	Error     string  `json:"error,omitempty"`
	FromRack  int64   `json:"from_rack,omitempty"`  // bytes received from same-rack peers
	FromDC    int64   `json:"from_dc,omitempty"`    // from same-dc peers in other racks
	FromOther int64   `json:"from_other,omitempty"` // from seeders/web seeds/others
}

// Progress is an agent's blob download state at Paths.Progress, rewritten at
// most about once a second.
type Progress struct {
	V       int            `json:"v"`
	Machine string         `json:"machine"`
	Blobs   []BlobProgress `json:"blobs"`
	At      time.Time      `json:"at"`
}

// Blob is a published blob at Paths.Blob(hex).
type Blob struct {
	V           int       `json:"v"`
	ID          string    `json:"id"` // sha256:<hex>
	Size        int64     `json:"size"`
	InfoHash    string    `json:"infohash"` // BitTorrent v1 infohash, hex
	PieceLength int64     `json:"piece_length"`
	Metainfo    []byte    `json:"metainfo"`           // bencoded .torrent (base64 in JSON)
	URLs        []string  `json:"urls,omitempty"`     // BEP 19 web seed / HTTP origin URLs
	Trackers    []string  `json:"trackers,omitempty"` // announce URLs
	Name        string    `json:"name,omitempty"`     // original file name, informational only
	PublishedAt time.Time `json:"published_at"`
	By          string    `json:"by,omitempty"`
}

// Encode marshals a payload, stamping the schema version.
func Encode(v any) ([]byte, error) {
	if s, ok := v.(interface{ setV() }); ok {
		s.setV()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("encode %T: %d bytes exceeds the %d-byte znode limit", v, len(b), MaxPayload)
	}
	return b, nil
}

// MustEncode is Encode for payloads that cannot fail (tests, constants).
func MustEncode(v any) []byte {
	b, err := Encode(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode unmarshals a payload and refuses unknown newer schema versions
// and payloads larger than MaxPayload (nothing dcroll writes is; a bigger
// one was written by someone else, and is not parsed).
func Decode(b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("decode %T: %d bytes exceeds the %d-byte payload limit: not written by dcroll", v, len(b), MaxPayload)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	var hdr struct {
		V int `json:"v"`
	}
	_ = json.Unmarshal(b, &hdr)
	if hdr.V > SchemaVersion {
		return fmt.Errorf("decode %T: schema version %d is newer than this dcroll (%d): upgrade dcroll", v, hdr.V, SchemaVersion)
	}
	return nil
}

// MaxPayload keeps payloads well under ZooKeeper's 1 MiB jute.maxbuffer.
const MaxPayload = 900 << 10

func (x *Head) setV()         { x.V = SchemaVersion }
func (x *HistoryEntry) setV() { x.V = SchemaVersion }
func (x *DeployEntry) setV()  { x.V = SchemaVersion }
func (x *Control) setV()      { x.V = SchemaVersion }
func (x *Current) setV()      { x.V = SchemaVersion }
func (x *StagingEntry) setV() { x.V = SchemaVersion }
func (x *Turn) setV()         { x.V = SchemaVersion }
func (x *Budget) setV()       { x.V = SchemaVersion }
func (x *Down) setV()         { x.V = SchemaVersion }
func (x *Agent) setV()        { x.V = SchemaVersion }
func (x *Progress) setV()     { x.V = SchemaVersion }
func (x *Blob) setV()         { x.V = SchemaVersion }
func (x *Member) setV()       { x.V = SchemaVersion }
func (x *BadBuild) setV()     { x.V = SchemaVersion }
