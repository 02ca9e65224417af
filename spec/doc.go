// Package spec is the staging spec: the document an operator pushes to say
// "this is what every machine should run next".
//
// A spec names a set of services. Each service has a version, a code blob
// (artifact) and optional static data blobs, all addressed by sha256, the
// command that starts it, a health check, a quorum (how many of its machines
// must stay up during a rollout), how many machines may upgrade at once,
// string settings that can be applied without a restart, and the services it
// depends on. An optional maintenance window limits when rollouts may
// progress.
//
// The package is pure: no I/O besides [Load], no goroutines, no clock (callers
// pass "now"). Its life cycle in dcroll is:
//
//	s, err := spec.Load("spec.yaml")  // parse strictly, apply defaults, validate
//	id := s.ID()                      // sha256 of s.Canonical(): the spec's name
//	order, _ := s.Order()             // dependencies first, ties by name
//	changes, _ := spec.Plan(head, s)  // what the rollout has to do vs. the current head
//	... store s.Canonical() under id; agents read it back with FromCanonical ...
//	if s.Window.Open(now) { ... }     // may the rollout progress now?
//
// # Canonical form and identity
//
// [Spec.Canonical] is compact JSON with a "schema" field ([SchemaVersion]),
// defaults applied, struct fields in a fixed order and map keys sorted.
// depends_on is sorted (it is a set); data, run and health.command keep the
// order given (it may mean something to the process). Durations are written
// as Go duration strings ("2m0s"), quorum as a number or "60%". So two
// specs that differ only in key order, YAML vs JSON, quoting, comments or
// spelled-out defaults have the same [Spec.ID]. The canonical JSON is itself a
// valid spec file: [Parse] accepts it and yields the same ID.
//
// # Upgrade domains and waves
//
// Two optional service fields shape the batches of a rollout:
//
//	store:
//	  max_parallel: 50
//	  quorum: "90%"
//	  domain: rack                # or dc, or an agent label: domain: pdu
//	  waves: dc                   # or waves: [dc-east, dc-west]
//
// domain names an agent label ([WellKnownLabels]: rack and dc; any other
// comes from the agents' config, labels: {pdu: p3}). The members sharing a
// value form an upgrade domain; domains go one after another in the order
// of their values, each as a whole as far as max_parallel and the quorum
// allow, and never two at once. Without domain the rule is one rack at a
// time. waves rolls the service out one data center after another: "dc"
// orders them by name, a list names the order (unlisted ones go last).
// Both are omitted from the canonical form when unset.
//
// # Errors
//
// [Parse] reports every problem it finds as a [*ValidationError], a one-line
// message naming the file, the line, the field path and what to do, e.g.
//
//	spec.yaml:7: services.api.depends_on: unknown service "dbx" (known: cache, db)
//
// Further problems are in ValidationError.More; [ValidationError.All] lists
// them all. A dependency cycle also unwraps to a [*CycleError].
package spec
