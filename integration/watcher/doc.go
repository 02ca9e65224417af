// Package watcher is an independent observer of a dcroll rollout for the
// integration tests: its own raw go-zookeeper connection records every
// change it sees under /dc/current/<svc> and /dc/down/<svc> (watches, plus
// polling as a safety net) as timestamped frames, and answers questions
// about the recorded history: how many machines were unavailable at once,
// how few healthy, when a service first went down or last came up.
//
// It deliberately shares no code with the agent or the coordinator (only
// the znode layout, spelled out here from znodes.Paths), so that a bug in
// their reading of ZooKeeper cannot hide a bug in their writing.
package watcher
