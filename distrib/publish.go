package distrib

import (
	"bytes"
	"context"
	"dcroll/internal/units"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// DefaultPieceLength is 128 KiB. A host can share a piece only once it
// holds all of it, so each hop of a rack's chain (see Ranking) delays a
// piece by about the request window (steering), at least two pieces.
// Measured with bench/distrib (3 racks x 8 hosts, 128 MiB, 16 Mbit/s
// hosts): chained racks with cross-rack gateway links, 256 KiB 118 s,
// 1 MiB 134 s; without them 256 KiB 96 s; with steering and one connection
// per peer, 256 KiB pieces and a 512 KiB window median host 72.9 s, 128 KiB
// and 256 KiB 72.1 s (bound 67.1 s), at 1.12 cores instead of 0.77 for the
// 24 hosts (twice the pieces to steer). Kraken's 4 MiB may suit 10 Gbit/s
// links better: measure. Blobs over ~3.2 GiB get larger pieces
// (maxPieces).
const DefaultPieceLength = 128 << 10

// maxPieces bounds the piece hashes (20 bytes each) in a metainfo to 512
// KiB: the Blob znode carries the metainfo base64-encoded in JSON (x4/3)
// and must stay under znodes.MaxPayload (900 KiB). 128 KiB pieces reach
// it at ~3.2 GiB; larger blobs get larger pieces.
const maxPieces = (512 << 10) / 20

// ErrBadMetainfo is wrapped when a published metainfo is unsafe or does not
// describe the blob it is published for.
var ErrBadMetainfo = errors.New("bad blob metainfo")

// PublishOptions configure Publish.
type PublishOptions struct {
	// OriginURL is the HTTP base of the origin, e.g. http://10.0.0.1:7070. It
	// gives the web seed URL <OriginURL>/blobs/<hex> and, without Trackers,
	// the tracker <OriginURL>/announce.
	OriginURL string
	// Trackers are announce URLs (default: <OriginURL>/announce).
	Trackers []string
	// PieceLength in bytes, a power of two >= 16 KiB (0: ChoosePieceLength).
	PieceLength int64
	// OriginWait bounds how long Publish waits for an origin that does not
	// answer before recording anything (0: DefaultOriginWait; see
	// CheckOrigin).
	OriginWait time.Duration
}

// ChoosePieceLength returns DefaultPieceLength, doubled until the blob has
// at most maxPieces pieces.
func ChoosePieceLength(size int64) int64 {
	pl := int64(DefaultPieceLength)
	for (size+pl-1)/pl > maxPieces {
		pl *= 2
	}
	return pl
}

// WebSeedURL is the BEP 19 web seed URL of a blob at an origin. It is an
// exact file URL (no trailing slash), which BEP 19 clients (anacrolix,
// aria2, libtorrent) use as is for single-file torrents.
func WebSeedURL(originURL, hexDigest string) string {
	return strings.TrimRight(originURL, "/") + "/blobs/" + hexDigest
}

// ErrOriginNotServing is wrapped when the origin does not serve a blob that
// Publish just put into the store: the store is not the origin's, or no
// origin runs at OriginURL. Agents could never download such a blob.
var ErrOriginNotServing = errors.New("origin does not serve the blob")

// Publish imports files into st, builds one single-file v1 torrent per blob
// (info name = the hex digest, never the file name) and records each at
// /dc/blobs/<hex>. Publishing an already published blob returns the
// existing record.
//
// Nothing is recorded unless every file can be published: Publish first
// checks every file, imports them all into st and, with an OriginURL,
// checks that the origin serves each one (HEAD <OriginURL>/blobs/<hex>
// answers 200 with the blob's size; see CheckOrigin). The origin serves
// straight from its store, so this holds as soon as st is the origin's
// store, before any record exists. Only then are the records written. A
// failed check leaves the files imported into st (content-addressed, so
// harmless) and ZooKeeper untouched, and wraps ErrOriginNotServing.
func Publish(ctx context.Context, c *znodes.Conn, st *Store, files []string, o PublishOptions) ([]znodes.Blob, error) {
	trackers := o.Trackers
	if len(trackers) == 0 && o.OriginURL != "" {
		trackers = []string{strings.TrimRight(o.OriginURL, "/") + "/announce"}
	}
	if o.PieceLength != 0 && (o.PieceLength < 16<<10 || o.PieceLength&(o.PieceLength-1) != 0) {
		return nil, fmt.Errorf("publish: piece length %d: want a power of two >= 16 KiB", o.PieceLength)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", f, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil, fmt.Errorf("publish %s: not a non-empty regular file", f)
		}
	}
	ids := make([]string, len(files))
	for i, f := range files {
		id, err := st.Import(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		ids[i] = id
	}
	if o.OriginURL != "" {
		for _, id := range ids {
			if err := CheckOrigin(ctx, o.OriginURL, st, id, o.OriginWait); err != nil {
				return nil, err // one line naming the origin, the blob and the fix
			}
		}
	}
	if err := c.EnsurePath(c.Paths().Blobs()); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var out []znodes.Blob
	for i, f := range files {
		b, err := publishOne(ctx, c, st, f, ids[i], trackers, o)
		if err != nil {
			return out, err
		}
		out = append(out, *b)
	}
	return out, nil
}

// DefaultOriginWait bounds how long CheckOrigin waits for an origin that
// does not answer (one just started, still dialing ZooKeeper).
const DefaultOriginWait = 10 * time.Second

// notFoundGrace bounds how long CheckOrigin retries a 404. The origin
// serves GET /blobs/<hex> straight from its store (no watch or nudge is
// involved: those only start BitTorrent seeding), so a blob imported into
// the origin's store is served at once and a 404 means another store.
const notFoundGrace = time.Second

// CheckOrigin checks that the origin at originURL serves blob id of st: a
// HEAD request to its web seed URL answers 200 with the blob's size as
// Content-Length. It retries an origin that does not answer for up to wait
// (0: DefaultOriginWait) and a 404 for up to a second. The origin needs no
// record to serve a blob, only the file in its store, so Publish calls it
// before writing any. The error wraps ErrOriginNotServing and is one line
// naming the origin, the blob and the likely fix.
func CheckOrigin(ctx context.Context, originURL string, st *Store, id string, wait time.Duration) error {
	if wait <= 0 {
		wait = DefaultOriginWait
	}
	h, err := ParseID(id)
	if err != nil {
		return err
	}
	size, err := blobSize(st, id)
	if err != nil {
		return err
	}
	base := strings.TrimRight(originURL, "/")
	u := WebSeedURL(base, h)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cl := &http.Client{Timeout: 2 * time.Second}
	start := time.Now()
	for {
		retry, err := headBlob(ctx, cl, u, base, id, st, size)
		if err == nil {
			return nil
		}
		if !retry || (errors.Is(err, errNotFound) && time.Since(start) >= min(notFoundGrace, wait)) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// originError is a CheckOrigin failure: a one-line message that wraps
// ErrOriginNotServing without repeating it.
type originError struct {
	msg      string
	notFound bool
}

func (e *originError) Error() string { return e.msg }
func (e *originError) Unwrap() []error {
	if e.notFound {
		return []error{ErrOriginNotServing, errNotFound}
	}
	return []error{ErrOriginNotServing}
}

// errNotFound marks a 404 (internal: CheckOrigin retries it less).
var errNotFound = errors.New("404")

func originErrorf(format string, args ...any) *originError {
	return &originError{msg: fmt.Sprintf(format, args...)}
}

func blobSize(st *Store, id string) (int64, error) {
	p, err := st.Path(id)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", id, err)
	}
	return fi.Size(), nil
}

// headBlob asks the origin for u once; retry says whether asking again
// may help.
func headBlob(ctx context.Context, cl *http.Client, u, base, id string, st *Store, size int64) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return false, originErrorf("origin %s: %v", base, err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, originErrorf("origin %s unreachable (%v) while checking %s: is `dcroll origin` running there?", base, err, id)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		e := originErrorf("origin %s answers 404 for %s: is --store %s the directory `dcroll origin --store` serves?", base, id, st.Dir())
		e.notFound = true
		return true, e
	case resp.StatusCode != http.StatusOK:
		return resp.StatusCode >= 500, originErrorf("origin %s answers %q for %s: is it a `dcroll origin`?", base, resp.Status, id)
	case resp.ContentLength != size:
		return false, originErrorf("origin %s serves %d bytes for %s, want %d: is --store %s the directory `dcroll origin --store` serves?", base, resp.ContentLength, id, size, st.Dir())
	}
	return false, nil
}

// publishOne records file, imported into st as id.
func publishOne(ctx context.Context, c *znodes.Conn, st *Store, file, id string, trackers []string, o PublishOptions) (*znodes.Blob, error) {
	if b, err := LookupBlob(c, id); err == nil {
		return b, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	h, _ := ParseID(id)
	path, _ := st.Path(id)
	size, err := blobSize(st, id)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	pl := o.PieceLength
	if pl == 0 {
		pl = ChoosePieceLength(size)
	}
	info := metainfo.Info{PieceLength: pl, Name: h, Length: size}
	if err := info.GeneratePieces(func(metainfo.FileInfo) (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{units.ContextReader(ctx, f), f}, nil
	}); err != nil {
		return nil, fmt.Errorf("publish %s: hash pieces: %w", file, err)
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	mi := metainfo.MetaInfo{InfoBytes: infoBytes, CreatedBy: "dcroll", CreationDate: time.Now().Unix()}
	if len(trackers) > 0 {
		mi.Announce = trackers[0]
		if len(trackers) > 1 {
			// One tier per tracker: BEP 12 clients announce to one tracker
			// of each tier, so every tracker (origin, coordinators) sees
			// every peer and their answers agree.
			for _, tr := range trackers {
				mi.AnnounceList = append(mi.AnnounceList, []string{tr})
			}
		}
	}
	var urls []string
	if o.OriginURL != "" {
		urls = []string{WebSeedURL(o.OriginURL, h)}
		mi.UrlList = urls
	}
	var buf bytes.Buffer
	if err := mi.Write(&buf); err != nil {
		return nil, fmt.Errorf("publish %s: encode metainfo: %w", file, err)
	}
	b := &znodes.Blob{
		ID:          id,
		Size:        size,
		InfoHash:    mi.HashInfoBytes().HexString(),
		PieceLength: pl,
		Metainfo:    buf.Bytes(),
		URLs:        urls,
		Trackers:    trackers,
		Name:        filepath.Base(file),
		PublishedAt: time.Now().UTC(),
		By:          whoami(),
	}
	data, err := znodes.Encode(b)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	if _, err := c.Create(c.Paths().Blob(h), data, 0); err != nil {
		if errors.Is(err, zk.ErrNodeExists) {
			return LookupBlob(c, id) // published concurrently
		}
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	return b, nil
}

// LookupBlob reads the published record of id. It wraps ErrNotFound when
// the blob is not published.
func LookupBlob(c *znodes.Conn, id string) (*znodes.Blob, error) {
	h, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	var b znodes.Blob
	if _, err := c.GetJSON(c.Paths().Blob(h), &b); err != nil {
		if errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("%w: %s is not published (run `dcroll blob publish FILE` on the build machine)", ErrNotFound, IDOf(h))
		}
		return nil, fmt.Errorf("lookup %s: %w", id, err)
	}
	if b.ID != IDOf(h) {
		return nil, fmt.Errorf("lookup %s: %w: record names %q", id, ErrBadMetainfo, b.ID)
	}
	return &b, nil
}

// MissingBlobs returns the ids that are not published (in input order).
func MissingBlobs(c *znodes.Conn, ids []string) ([]string, error) {
	var missing []string
	for _, id := range ids {
		h, err := ParseID(id)
		if err != nil {
			return nil, err
		}
		ok, _, err := c.ZK().Exists(c.Paths().Blob(h))
		if err != nil {
			return nil, fmt.Errorf("check blob %s: %w", id, err)
		}
		if !ok {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// WriteTorrent writes the published .torrent of id to w.
func WriteTorrent(c *znodes.Conn, id string, w io.Writer) error {
	b, err := LookupBlob(c, id)
	if err != nil {
		return err
	}
	if _, err := w.Write(b.Metainfo); err != nil {
		return fmt.Errorf("write torrent %s: %w", id, err)
	}
	return nil
}

// checkedTorrent is a metainfo that passed checkBlob.
type checkedTorrent struct {
	mi       *metainfo.MetaInfo
	info     metainfo.Info
	hex      string
	infoHash metainfo.Hash
}

// checkBlob parses a Blob's metainfo and refuses anything but a single-file
// v1 torrent whose name is the blob's hex digest and whose length is its
// size, so no metainfo can steer where data is written.
func checkBlob(b *znodes.Blob) (*checkedTorrent, error) {
	h, err := ParseID(b.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMetainfo, err)
	}
	mi, err := metainfo.Load(bytes.NewReader(b.Metainfo))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadMetainfo, b.ID, err)
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadMetainfo, b.ID, err)
	}
	switch {
	case len(info.Files) != 0 || info.IsDir():
		return nil, fmt.Errorf("%w: %s: multi-file torrents are refused", ErrBadMetainfo, b.ID)
	case info.HasV2() || info.MetaVersion != 0:
		return nil, fmt.Errorf("%w: %s: v2 torrents are refused", ErrBadMetainfo, b.ID)
	case info.Name != h:
		return nil, fmt.Errorf("%w: %s: info name %q is not the blob's hex digest", ErrBadMetainfo, b.ID, info.Name)
	case info.Length != b.Size || b.Size <= 0:
		return nil, fmt.Errorf("%w: %s: info length %d does not match size %d", ErrBadMetainfo, b.ID, info.Length, b.Size)
	case info.PieceLength <= 0 || len(info.Pieces) != 20*int((b.Size+info.PieceLength-1)/info.PieceLength):
		return nil, fmt.Errorf("%w: %s: inconsistent pieces", ErrBadMetainfo, b.ID)
	}
	ih := mi.HashInfoBytes()
	if want, err := hex.DecodeString(b.InfoHash); err != nil || !bytes.Equal(want, ih[:]) {
		return nil, fmt.Errorf("%w: %s: infohash %s does not match the record's %q", ErrBadMetainfo, b.ID, ih.HexString(), b.InfoHash)
	}
	return &checkedTorrent{mi: mi, info: info, hex: h, infoHash: ih}, nil
}

func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
