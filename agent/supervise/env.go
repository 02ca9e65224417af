package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables dcroll passes to every service.
const (
	EnvVersion  = "DCROLL_VERSION"  // the spec's version label
	EnvService  = "DCROLL_SERVICE"  // the service name
	EnvMachine  = "DCROLL_MACHINE"  // the machine (agent) name
	EnvSettings = "DCROLL_SETTINGS" // path of the JSON settings file (see WriteSettings)
	EnvData     = "DCROLL_DATA"     // colon-separated paths of the data blobs, in spec order
)

// Environ returns the environment of the service: the agent's own
// environment, then the DCROLL_* variables from cfg, then cfg.Env; a later
// definition of a name replaces an earlier one.
func (cfg *Config) Environ() []string {
	env := os.Environ()
	env = append(env,
		EnvVersion+"="+cfg.Version,
		EnvService+"="+cfg.Service,
		EnvMachine+"="+cfg.Machine,
		EnvSettings+"="+cfg.SettingsFile,
		EnvData+"="+strings.Join(cfg.Data, ":"),
	)
	env = append(env, cfg.Env...)
	return dedupEnv(env)
}

// dedupEnv keeps the last definition of every name, in first-seen order.
func dedupEnv(env []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// Expand replaces ${VAR} and $VAR in s with values from env ("K=V" list,
// last definition wins); "$$" stands for a literal "$". A variable that is
// not defined is an error, so a missing DCROLL_PORT shows up as such rather
// than as a malformed URL.
func Expand(s string, env []string) (string, error) {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	var missing []string
	out := os.Expand(s, func(name string) string {
		if name == "$" {
			return "$"
		}
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q uses $%s, which is not set in the service environment", s, missing[0])
	}
	return out, nil
}

// ExpandAll applies [Expand] to every element of args; what names the list
// in error messages ("run", "health.command").
func ExpandAll(what string, args, env []string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		v, err := Expand(a, env)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", what, i, err)
		}
		out[i] = v
	}
	return out, nil
}

// WriteSettings writes settings as a JSON object (keys sorted) to path,
// atomically: a reader sees the old file or the new one, never a mix. A nil
// map is written as {}.
func WriteSettings(path string, settings map[string]string) error {
	if settings == nil {
		settings = map[string]string{}
	}
	b, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		return fmt.Errorf("write settings %s: %w", path, err)
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write settings %s: %w", path, err)
	}
	return nil
}

// ReadSettings reads a file written by [WriteSettings].
func ReadSettings(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read settings %s: %w", path, err)
	}
	return m, nil
}

// writeFileAtomic writes data to a temporary file next to path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}
