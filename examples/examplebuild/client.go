package examplebuild

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// HelloStatus is what the example service answers on /healthz.
type HelloStatus struct {
	Service  string            `json:"service"`
	Version  string            `json:"version"`
	Settings map[string]string `json:"settings"`
	Reloads  int               `json:"reloads"`
	PID      int               `json:"pid"`
	Broken   bool              `json:"broken"`
}

// Hello asks the example service on 127.0.0.1:port for its status.
func Hello(port int) (HelloStatus, error) {
	var st HelloStatus
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}
