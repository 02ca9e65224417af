// Package buildinfo says which build of dcroll is running: for
// `dcroll version` and the dcroll_build_info metric.
//
// The version and commit come from the Go toolchain's build information
// (the module version, and the vcs.revision and vcs.modified settings that
// `go build` records in a git checkout). A release build can set them
// explicitly, which wins:
//
//	go build -ldflags "-X dcroll/internal/buildinfo.Version=v1.4.0 -X dcroll/internal/buildinfo.Commit=3f2a9c1" ./cmd/dcroll
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit override what the build information says when set
// with -ldflags -X (see the package comment).
var (
	Version string
	Commit  string
)

// Info names a build.
type Info struct {
	Version   string `json:"version"`    // module version, "devel" for a source build
	Commit    string `json:"commit"`     // VCS revision, "-dirty" appended for modified trees; "unknown" without VCS info
	GoVersion string `json:"go_version"` // the toolchain that built it, e.g. go1.26.0
}

// Get returns the running build's Info. Every field is non-empty.
func Get() Info {
	info := Info{Version: "devel", Commit: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			info.Commit = rev
		}
	}
	if Version != "" {
		info.Version = Version
	}
	if Commit != "" {
		info.Commit = Commit
	}
	return info
}
