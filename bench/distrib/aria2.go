package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"dcroll/distrib"
)

// The aria2c mode is the stock swarm anyone can assemble from two Debian
// packages: opentracker (no rack awareness, hands out random peers) and
// aria2c with its defaults, on the same fabric and the same blob, the
// torrent built with the piece length dcroll publishes. Only what the
// fabric forces is set: no DHT and no local peer discovery (there is no
// internet and LPD multicasts would cross racks unseen by the tracker),
// and seeding forever (--seed-ratio=0.0) so finished hosts keep serving,
// as dcroll's agents do. PEX stays on: it is aria2's default.
const opentrackerPort = 6969

func aria2Args(dir, torrentPath string, extra ...string) []string {
	args := []string{
		"--dir=" + dir, "--seed-ratio=0.0", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
		"--listen-port=" + strconv.Itoa(peerPort), "--summary-interval=0", "--console-log-level=warn",
		"--file-allocation=none", "--auto-save-interval=0", "--bt-save-metadata=false",
	}
	return append(append(args, extra...), torrentPath)
}

// runAria2Origin writes the torrent, starts opentracker and an aria2c
// seeder in the seeder namespace, and reports ready once the tracker lists
// the seeder as complete.
func runAria2Origin(ctx context.Context, f originFlags, log *slog.Logger) error {
	sum, _, err := hashFile(f.file)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	// The seeder's copy is named like dcroll's blobs: the hex digest.
	data := filepath.Join(f.dir, sum)
	if err := os.Link(f.file, data); err != nil {
		return fmt.Errorf("link the blob into the seeder dir: %w", err)
	}
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return err
	}
	announce := "http://" + net.JoinHostPort(host, strconv.Itoa(opentrackerPort)) + "/announce"
	fi, err := os.Stat(data)
	if err != nil {
		return err
	}
	pl := f.pieceLength
	if pl == 0 {
		pl = distrib.ChoosePieceLength(fi.Size())
	}
	info := metainfo.Info{PieceLength: pl}
	if err := info.BuildFromFilePath(data); err != nil {
		return fmt.Errorf("build torrent: %w", err)
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return err
	}
	mi := metainfo.MetaInfo{InfoBytes: infoBytes, Announce: announce}
	torrentPath := filepath.Join(f.dir, "blob.torrent")
	tf, err := os.Create(torrentPath)
	if err != nil {
		return err
	}
	if err := errors.Join(mi.Write(tf), tf.Close()); err != nil {
		return fmt.Errorf("write torrent: %w", err)
	}
	ih := mi.HashInfoBytes()

	// opentracker chroots into -d and drops to nobody: give it a
	// directory of its own. Debian builds it with an access list (every
	// other torrent: "Requested download is not authorized"): the info hash,
	// hex, one per line. The relative path works before and after chroot.
	otDir := filepath.Join(f.dir, "opentracker")
	if err := os.MkdirAll(otDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(otDir, "whitelist"), []byte(ih.HexString()+"\n"), 0o644); err != nil {
		return err
	}
	ot := exec.CommandContext(ctx, "opentracker", "-i", host, "-p", strconv.Itoa(opentrackerPort), "-P", strconv.Itoa(opentrackerPort),
		"-d", otDir, "-w", "whitelist")
	ot.Dir = otDir
	ot.Stdout, ot.Stderr = os.Stderr, os.Stderr
	ot.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ot.Start(); err != nil {
		return fmt.Errorf("start opentracker (apt-get install opentracker): %w", err)
	}
	defer stopCmd(ot)
	seed := exec.CommandContext(ctx, "aria2c", aria2Args(f.dir, torrentPath, "--check-integrity=true", "--bt-seed-unverified=false")...)
	seed.Stdout, seed.Stderr = os.Stderr, os.Stderr
	seed.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := seed.Start(); err != nil {
		return fmt.Errorf("start aria2c (apt-get install aria2): %w", err)
	}
	defer stopCmd(seed)
	scrape := "http://" + net.JoinHostPort(host, strconv.Itoa(opentrackerPort)) + "/scrape?info_hash=" + url.QueryEscape(string(ih[:]))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := scrapeComplete(ctx, scrape, ih)
		if err == nil && n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the aria2c seeder never showed up complete at %s: %v", scrape, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	emit(event{Event: "ready", ID: "sha256:" + sum, URL: torrentPath})
	log.Info("aria2c seeding", "torrent", torrentPath, "infohash", ih.HexString(), "piece_length", pl)
	go serveSyncs(ctx, f, nil)
	<-ctx.Done()
	return nil
}

// scrapeComplete asks opentracker how many seeders the torrent has.
func scrapeComplete(ctx context.Context, u string, ih metainfo.Hash) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, err
	}
	var ans struct {
		Files map[string]struct {
			Complete int `bencode:"complete"`
		} `bencode:"files"`
	}
	if err := bencode.Unmarshal(body, &ans); err != nil {
		return 0, fmt.Errorf("scrape answer %q: %w", body, err)
	}
	return ans.Files[string(ih[:])].Complete, nil
}

func stopCmd(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = c.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

// aria2Fetcher is one host of the stock swarm: aria2c started on "go",
// done when its on-bt-download-complete hook fired (every piece SHA-1
// checked by aria2c) and the file's sha256 matches, like distrib's Fetch.
type aria2Fetcher struct {
	id, dir, torrent string
	cmd              *exec.Cmd
}

func (a *aria2Fetcher) Fetch(ctx context.Context) (string, error) {
	want := strings.TrimPrefix(a.id, "sha256:")
	marker := filepath.Join(a.dir, "complete")
	hook := filepath.Join(a.dir, "on-complete.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\ntouch '"+marker+"'\n"), 0o755); err != nil {
		return "", err
	}
	a.cmd = exec.Command("aria2c", aria2Args(a.dir, a.torrent, "--on-bt-download-complete="+hook)...)
	logf, err := os.Create(filepath.Join(a.dir, "aria2c.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return "", fmt.Errorf("start aria2c: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- a.cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case err := <-exited:
			a.cmd = nil
			return "", fmt.Errorf("aria2c exited before completing: %v", err)
		case <-tick.C:
		}
	}
	path := filepath.Join(a.dir, want)
	got, _, err := hashFile(path)
	if err != nil {
		return "", err
	}
	if got != want {
		return "", fmt.Errorf("aria2c wrote sha256 %s, want %s", got, want)
	}
	return path, nil
}

func (a *aria2Fetcher) Close() error {
	if a.cmd != nil && a.cmd.Process != nil {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	}
	return nil
}
