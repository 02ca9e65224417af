// Package distrib moves blobs from the build machine to every agent: a
// content-addressed store, a BitTorrent swarm (anacrolix/torrent) with a
// rack-aware tracker, an HTTP web seed as fallback, end-to-end sha256
// verification, and mlock (package distrib/mlock) to keep blobs resident.
//
// Pieces and where they run:
//
//	build machine:  Publish(ctx, conn, store, files, opts)
//	                  import into the store, build a single-file v1 torrent whose
//	                  info name is the sha256 hex, write /dc/blobs/<hex> (Blob).
//	origin:         NewOrigin(cfg) + Run(ctx)  (or RunOrigin)
//	                  seeds every published blob in its store (pieces verified
//	                  first), serves GET /blobs/<hex> (BEP 19 web seed, Range)
//	                  and the tracker at /announce; watches /dc/blobs.
//	agent:          NewNode(ctx, cfg); Fetch / FetchLocked; Keep; RunProgress
//	                  fetch through the swarm, fall back to the web seed when it
//	                  stalls, verify the sha256, move into the store, keep seeding.
//
// Store layout (Store): <dir>/blobs/<hex> complete and verified,
// <dir>/partial/<infohash>/<hex> downloads, <dir>/tmp imports. No path is
// ever built from metainfo: checkBlob refuses any metainfo that is not a
// single file named by the blob's hex with the blob's size.
//
// Tracker (Tracker, RankPeers): an in-memory peer store (announces expire
// after 2x the interval) plus the rack map from /dc/agents (RackMap: watch on
// the children, refresh on nudge). An announcer is identified by its remote
// IP and announced port. It gets its own rack first, then, if it is one of
// its rack's gateways for the blob (its earliest announcers), a few gateways
// of other racks, then the origin, last. So a blob crosses each rack uplink
// about once; see Ranking.
//
// A data center without an origin (TrackerConfig.OriginDC) gets it through
// one DC gateway, the earliest of its rack gateways; its other rack
// gateways pull from the DC gateway, so one copy crosses the WAN.
//
// Node main loop (Fetch): add the torrent (web seeds removed), DownloadAll,
// then every 25 ms (steerEvery):
//   - steer the piece order: pieces some connected peer has are wanted above
//     those nobody has, the rack's spread segment first (steering,
//     spreadSegment), inside a small request window (RequestWindow): pieces
//     complete quickly and move on down the rack chain;
//   - watch for a stall (stallWatch): a peer went away and nothing arrived
//     for RerouteAfter (1 s; half that when no peer left offers anything),
//     or nothing for 3 x RerouteAfter although a peer offers pieces:
//     re-announce as stalled (the tracker probes the rack and forgets dead
//     members, so the next member becomes gateway or the predecessor is
//     handed out), then, one level per 2 x RerouteAfter, the rack from the
//     rack map, the blob's recovering set (/dc/recovering/<blob>: the
//     hosts that lost a source beyond their rack, i.e. each rack's gateway
//     once the origin died; they trade with each other and feed their
//     chains: about one more copy per rack), the data center, everyone. A
//     host that lost a source beyond its rack skips the rack level; a
//     starved host (alive peers, none with a piece it lacks) re-announces
//     once and waits for its chain;
//   - after StallTimeout without progress add the web seeds.
//
// When complete, hash the file, rename it into blobs/ (the mmap follows the
// inode, so seeding continues). Bytes received are counted per peer class
// (same rack, same DC, other) through the client's ReceivedUsefulData
// callback and the rack map. Bytes are counted, and the request window
// resized to the download's rate (steering.adapt), every 250 ms.
package distrib
