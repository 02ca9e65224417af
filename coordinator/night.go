package coordinator

import (
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// ReadRollout reads the leading coordinator's night record (/dc/rollout):
// per service blocked-by and ETA, the night's ETA and the measured step
// times. It returns nil and no error when no coordinator has written one.
func ReadRollout(c *znodes.Conn) (*znodes.Rollout, error) {
	var r znodes.Rollout
	_, err := c.GetJSON(c.Paths().Rollout(), &r)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollout record: %w", err)
	}
	return &r, nil
}
