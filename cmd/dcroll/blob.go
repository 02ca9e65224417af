package main

import (
	"dcroll/internal/units"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"dcroll/distrib"
	"dcroll/spec"
	"dcroll/znodes"
)

func storeFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "store", Value: "/var/lib/dcroll/origin", EnvVars: []string{"DCROLL_STORE"}, Usage: "the origin's content-addressed store `DIR` (shared by blob publish and origin)"}
}

func blobCommand() *cli.Command {
	return &cli.Command{
		Name:  "blob",
		Usage: "publish release blobs and inspect them",
		Description: `Blobs are content-addressed: a blob's id is sha256:<hex> of its bytes. On the
build machine, 'dcroll blob publish' imports files into the origin's store
(--store, a hard link when on the same filesystem) and records /dc/blobs/<hex>
(size, BitTorrent metainfo, web seed URL). 'dcroll origin', running on the
same machine with the same --store, seeds every published blob it holds.
Before recording anything, publish checks that the origin at --origin serves
every blob (HEAD /blobs/<hex>): a --store the origin does not serve fails
with nothing recorded. With --spec, the spec and its SERVICE names are
checked before anything is imported.

From built files to a pushed spec, two commands:
   dcroll blob publish --origin http://build1:7070 --spec nightly.yaml db=out/db.tar.gz api=out/api.tar.gz
   dcroll push nightly.yaml
(--spec writes each SERVICE's new artifact id into the spec file.)`,
		Subcommands: []*cli.Command{
			{
				Name:      "publish",
				Usage:     "import files into the origin store and publish them; prints their ids",
				ArgsUsage: "FILE... | --spec SPEC SERVICE=FILE...",
				Flags: []cli.Flag{
					storeFlag(),
					&cli.StringFlag{Name: "origin", EnvVars: []string{"DCROLL_ORIGIN"}, Required: true, Usage: "the origin's HTTP `URL` (web seed and tracker), as agents reach it, e.g. http://10.0.0.1:7070"},
					&cli.Int64Flag{Name: "piece-length", Usage: "BitTorrent piece length in bytes (default: 128 KiB, larger for blobs over 3.2 GiB)"},
					&cli.StringSliceFlag{Name: "tracker", Usage: "announce `URL` (repeat; default ORIGIN/announce; add coordinators' http://HOST:7080/announce for trackers that survive the origin)"},
					&cli.StringFlag{Name: "spec", Usage: "write the ids into `SPEC.yaml`: arguments are SERVICE=FILE"},
					jsonFlag(),
				},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, -1, "one or more files"); err != nil {
						return err
					}
					origin, err := checkURLFlag("origin", c.String("origin"))
					if err != nil {
						return err
					}
					for _, tr := range c.StringSlice("tracker") {
						if _, err := checkURLFlag("tracker", tr); err != nil {
							return err
						}
					}
					files, services := c.Args().Slice(), []string(nil)
					if f := c.String("spec"); f != "" {
						if files, services, err = specArgs(f, c.Args().Slice()); err != nil {
							return err
						}
					}
					st, err := distrib.OpenStore(c.String("store"))
					if err != nil {
						return fmt.Errorf("open store: %w", err)
					}
					return withConn(c, func(conn *znodes.Conn) error {
						blobs, err := distrib.Publish(c.Context, conn, st, files, distrib.PublishOptions{OriginURL: origin, Trackers: c.StringSlice("tracker"), PieceLength: c.Int64("piece-length")})
						if err != nil {
							return err
						}
						if f := c.String("spec"); f != "" {
							ids := map[string]string{}
							for i, svc := range services {
								ids[svc] = blobs[i].ID
							}
							if err := rewriteSpec(f, ids); err != nil {
								return err
							}
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, blobs)
						}
						for i, b := range blobs {
							fmt.Fprintf(c.App.Writer, "%s  %s  %s\n", b.ID, units.HumanBytes(b.Size), c.Args().Get(i))
						}
						return nil
					})
				},
			},
			{
				Name:  "list",
				Usage: "list published blobs",
				Flags: []cli.Flag{jsonFlag()},
				Action: func(c *cli.Context) error {
					return withConn(c, func(conn *znodes.Conn) error {
						names, _, err := conn.ZK().Children(conn.Paths().Blobs())
						if err != nil {
							return fmt.Errorf("list blobs: %w", err)
						}
						sort.Strings(names)
						blobs := []znodes.Blob{}
						for _, n := range names {
							b, err := distrib.LookupBlob(conn, distrib.IDOf(n))
							if err != nil {
								return err
							}
							b.Metainfo = nil
							blobs = append(blobs, *b)
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, blobs)
						}
						tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "ID\tSIZE\tPIECE\tNAME\tPUBLISHED")
						for _, b := range blobs {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.ID, units.HumanBytes(b.Size), units.HumanBytes(b.PieceLength), b.Name, b.PublishedAt.Local().Format(time.DateTime))
						}
						return tw.Flush()
					})
				},
			},
			{
				Name:      "torrent",
				Usage:     "write a published blob's .torrent (for any BitTorrent client)",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (default stdout)"}},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, 1, "one blob id"); err != nil {
						return err
					}
					return withConn(c, func(conn *znodes.Conn) error {
						var w io.Writer = c.App.Writer
						if o := c.String("output"); o != "" {
							f, err := os.Create(o)
							if err != nil {
								return err
							}
							defer f.Close()
							w = f
						}
						return distrib.WriteTorrent(conn, c.Args().First(), w)
					})
				},
			},
			{
				Name:      "fetch",
				Usage:     "download blobs through the swarm into a store, verified, with a progress bar",
				ArgsUsage: "ID...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Value: "/var/lib/dcroll/agent", EnvVars: []string{"DCROLL_DATA_DIR"}, Usage: "store `DIR`"},
					&cli.StringFlag{Name: "listen", Value: "0.0.0.0:0", Usage: "BitTorrent listen `ADDR`"},
					&cli.StringFlag{Name: "machine", Usage: "name in /dc/progress (default hostname)"},
				},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, -1, "one or more blob ids"); err != nil {
						return err
					}
					machine := c.String("machine")
					if machine == "" {
						machine, _ = os.Hostname()
					}
					return withConn(c, func(conn *znodes.Conn) error {
						node, err := distrib.NewNode(c.Context, distrib.NodeConfig{DataDir: c.String("data-dir"), ListenAddr: c.String("listen"), Conn: conn, Machine: machine, Logger: quietLogger(c)})
						if err != nil {
							return err
						}
						defer node.Close()
						for _, id := range c.Args().Slice() {
							p, err := node.Fetch(c.Context, id, func(bp znodes.BlobProgress) {
								fmt.Fprintf(c.App.ErrWriter, "\r%s %s", shortBlob(bp.Blob), bar(bp.Bytes, bp.Total, bp.RateBps, bp.Peers, bp.Source))
							})
							fmt.Fprintln(c.App.ErrWriter)
							if err != nil {
								return err
							}
							fmt.Fprintln(c.App.Writer, p)
						}
						return nil
					})
				},
			},
		},
	}
}

func originCommand() *cli.Command {
	return &cli.Command{
		Name:  "origin",
		Usage: "seed published blobs (BitTorrent + HTTP web seed) and run the rack-aware tracker",
		Description: `Runs on the build machine, next to 'dcroll blob publish' (same --store).
It seeds every blob of /dc/blobs present in its store over BitTorrent after
verifying it, serves GET /blobs/<hex> (BEP 19 web seed, the fallback when the
swarm stalls) and the tracker at /announce: peers of the same rack first, then
a few of the same data center, with the racks read from /dc/agents.`,
		Flags: []cli.Flag{
			storeFlag(),
			&cli.StringFlag{Name: "listen", Value: "0.0.0.0:6881", EnvVars: []string{"DCROLL_ORIGIN_LISTEN"}, Usage: "BitTorrent `ADDR` (use the data-center IP: peers are told it)"},
			&cli.StringFlag{Name: "http", Value: "0.0.0.0:7070", EnvVars: []string{"DCROLL_ORIGIN_HTTP"}, Usage: "web seed and tracker `ADDR`"},
			&cli.StringFlag{Name: "dc", EnvVars: []string{"DCROLL_DC"}, Usage: "data center of this origin: other data centers get it through one gateway each, so one copy crosses the WAN"},
			&cli.BoolFlag{Name: "members-only", Usage: "close the tracker: an announce from an address that is not a registered agent (/dc/agents) gets no peers"},
			&cli.BoolFlag{Name: "random-peers", Usage: "turn rack ordering off (for comparisons)"},
			sessionTimeoutFlag(),
		},
		Action: func(c *cli.Context) error {
			st, err := distrib.OpenStore(c.String("store"))
			if err != nil {
				return fmt.Errorf("open store: %w", err)
			}
			conn, err := daemonConn(c)
			if err != nil {
				return err
			}
			defer conn.Close()
			o, err := distrib.NewOrigin(distrib.OriginConfig{Store: st, Conn: conn, ListenAddr: c.String("listen"), HTTPAddr: c.String("http"), Logger: logger(c), Ranking: distrib.Ranking{Random: c.Bool("random-peers")}, MembersOnly: c.Bool("members-only"), DC: c.String("dc")})
			if err != nil {
				return err
			}
			logger(c).Info("origin serving", "http", o.URL(), "peer", o.PeerAddr(), "store", st.Dir())
			return o.Run(c.Context)
		},
	}
}

// checkURLFlag refuses a --origin or --tracker that is not an http(s) URL
// with a host (agents would get a tracker or web seed they cannot use) and
// returns it without a trailing slash.
func checkURLFlag(flag, v string) (string, error) {
	u, err := url.Parse(v)
	if err == nil && u.Host != "" && u.Scheme != "http" && u.Scheme != "https" {
		return "", usageError{msg: fmt.Sprintf("--%s %q: write an http or https URL, e.g. http://%s%s", flag, v, u.Host, u.Path)}
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" {
		return "", usageError{msg: fmt.Sprintf("--%s %q: write a URL with a scheme, e.g. http://%s", flag, v, strings.TrimPrefix(v, "//"))}
	}
	if u.Host == "" {
		return "", usageError{msg: fmt.Sprintf("--%s %q: write a URL with a scheme and a host, e.g. http://127.0.0.1:7070", flag, v)}
	}
	return strings.TrimRight(v, "/"), nil
}

// specArgs checks SERVICE=FILE arguments against the spec file before
// anything is published: the spec must take new artifacts for these
// services (SetArtifacts on placeholder ids, the same check the rewrite
// does afterwards), each service must be in it, at most once.
func specArgs(specFile string, args []string) (files, services []string, err error) {
	data, err := os.ReadFile(specFile)
	if err != nil {
		return nil, nil, fmt.Errorf("blob publish --spec: %w", err)
	}
	var doc struct {
		Services map[string]yaml.Node `yaml:"services"`
	}
	_ = yaml.Unmarshal(data, &doc) // a malformed spec is reported by SetArtifacts below
	known := make([]string, 0, len(doc.Services))
	for name := range doc.Services {
		known = append(known, name)
	}
	sort.Strings(known)
	placeholders := map[string]string{}
	for _, a := range args {
		svc, file, ok := strings.Cut(a, "=")
		if !ok || svc == "" || file == "" {
			return nil, nil, usageError{msg: fmt.Sprintf("blob publish --spec: %q: want SERVICE=FILE", a)}
		}
		if _, dup := placeholders[svc]; dup {
			return nil, nil, usageError{msg: fmt.Sprintf("blob publish --spec %s: service %q given twice", specFile, svc)}
		}
		if _, ok := doc.Services[svc]; !ok && len(known) > 0 {
			return nil, nil, usageError{msg: fmt.Sprintf("blob publish --spec %s: unknown service %q (%s)", specFile, svc, spec.Suggest(svc, known, "services"))}
		}
		placeholders[svc] = "sha256:" + strings.Repeat("0", 64)
		services, files = append(services, svc), append(files, file)
	}
	if _, err := spec.SetArtifacts(specFile, data, placeholders); err != nil {
		return nil, nil, err
	}
	return files, services, nil
}

// rewriteSpec sets the artifact ids of a spec file in place (atomically).
func rewriteSpec(path string, ids map[string]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := spec.SetArtifacts(path, data, ids)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
