package supervise

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PIDInfo is the content of a supervisor's PID file: enough to recognize the
// process after the agent restarts, and to not mistake a recycled PID for it.
type PIDInfo struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot):
	// with PID it identifies one process for the life of the machine.
	StartTime uint64 `json:"start_time"`
	// Cmdline is /proc/<pid>/cmdline right after the start (for a script, the
	// interpreter's command line).
	Cmdline []string `json:"cmdline"`
	// Argv is the command the supervisor executed, Dir its working directory.
	Argv []string `json:"argv"`
	Dir  string   `json:"dir"`
	// Started is when the process was started (wall clock).
	Started time.Time `json:"started"`
}

// ReadPIDFile reads a PID file written by a [Supervisor].
func ReadPIDFile(path string) (PIDInfo, error) {
	var info PIDInfo
	b, err := os.ReadFile(path)
	if err != nil {
		return info, fmt.Errorf("read pid file: %w", err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("read pid file %s: %w", path, err)
	}
	if info.PID <= 0 {
		return info, fmt.Errorf("read pid file %s: no pid", path)
	}
	return info, nil
}

func writePIDFile(path string, info PIDInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o644)
}

// Alive reports whether the process recorded in info is still running: same
// PID, same start time, same command line, and not a zombie. When it is not,
// the reason says why.
func (info PIDInfo) Alive() (ok bool, reason string) {
	state, start, err := procStat(info.PID)
	if err != nil {
		return false, fmt.Sprintf("pid %d: %v", info.PID, err)
	}
	if state == 'Z' || state == 'X' {
		return false, fmt.Sprintf("pid %d has exited", info.PID)
	}
	if start != info.StartTime {
		return false, fmt.Sprintf("pid %d is another process (start time %d, recorded %d)", info.PID, start, info.StartTime)
	}
	cmd, err := procCmdline(info.PID)
	if err != nil {
		return false, fmt.Sprintf("pid %d: %v", info.PID, err)
	}
	if !slices.Equal(cmd, info.Cmdline) {
		return false, fmt.Sprintf("pid %d runs %q, recorded %q", info.PID, cmd, info.Cmdline)
	}
	return true, ""
}

// procStat returns the state letter and start time of pid from /proc.
func procStat(pid int) (state byte, startTime uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, errors.New("no such process")
		}
		return 0, 0, err
	}
	// "pid (comm) S ppid ...": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // field 22; f[0] is field 3
	if err != nil {
		return 0, 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return f[0][0], start, nil
}

func procCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil, errors.New("empty command line (exited?)")
	}
	return strings.Split(string(b), "\x00"), nil
}
