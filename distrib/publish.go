package distrib

import (
	"bytes"
	"context"
	"dcroll/internal/units"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

// DefaultPieceLength is 256 KiB. A host can share a piece only once it
// holds all of it, and anacrolix v1.59.1 keeps up to ~15 MiB of requests
// outstanding per connection, served in random order: the larger the piece,
// the later it completes at each hop of a rack's chain (see Ranking).
// Measured with bench/distrib (3 racks x 8 hosts, 128 MiB, 16 Mbit/s
// hosts, chained racks with cross-rack gateway links): 256 KiB 118 s,
// 1 MiB 134 s; without cross-rack links 256 KiB 96 s. Kraken's 4 MiB may
// suit 10 Gbit/s links better: measure. Blobs over ~6.4 GiB get larger
// pieces (maxPieces).
const DefaultPieceLength = 256 << 10

// maxPieces bounds the piece hashes (20 bytes each) in a metainfo to 512
// KiB: the Blob znode carries the metainfo base64-encoded in JSON (x4/3)
// and must stay under znodes.MaxPayload (900 KiB). 256 KiB pieces reach
// it at ~6.4 GiB; larger blobs get larger pieces.
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

// Publish imports files into st, builds one single-file v1 torrent per blob
// (info name = the hex digest, never the file name) and records each at
// /dc/blobs/<hex>. Publishing an already published blob returns the
// existing record.
func Publish(ctx context.Context, c *znodes.Conn, st *Store, files []string, o PublishOptions) ([]znodes.Blob, error) {
	trackers := o.Trackers
	if len(trackers) == 0 && o.OriginURL != "" {
		trackers = []string{strings.TrimRight(o.OriginURL, "/") + "/announce"}
	}
	if o.PieceLength != 0 && (o.PieceLength < 16<<10 || o.PieceLength&(o.PieceLength-1) != 0) {
		return nil, fmt.Errorf("publish: piece length %d: want a power of two >= 16 KiB", o.PieceLength)
	}
	if err := c.EnsurePath(c.Paths().Blobs()); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var out []znodes.Blob
	for _, f := range files {
		b, err := publishOne(ctx, c, st, f, trackers, o)
		if err != nil {
			return out, err
		}
		out = append(out, *b)
	}
	return out, nil
}

func publishOne(ctx context.Context, c *znodes.Conn, st *Store, file string, trackers []string, o PublishOptions) (*znodes.Blob, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil, fmt.Errorf("publish %s: not a non-empty regular file", file)
	}
	id, err := st.Import(ctx, file)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if b, err := LookupBlob(c, id); err == nil {
		return b, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("publish %s: %w", file, err)
	}
	h, _ := ParseID(id)
	path, _ := st.Path(id)
	size := fi.Size()
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
