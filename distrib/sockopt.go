package distrib

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultCongestionControl is the TCP congestion control of every swarm
// and web seed socket (TCP_CONGESTION, per socket: the machine's default is
// left alone); where the kernel refuses it, reno (always allowed). "system"
// keeps the kernel's default.
//
// Why not the kernel's default: on a swarm host the download and the upload
// share one full-duplex link, and a rack chain member sends at its link rate
// while it receives at its link rate. The ACKs (and piece requests) of its
// download then wait behind its own upload in the egress queue (measured on
// the benchmark fabric: 100-137 KiB backlog on a 16 Mbit/s host link,
// 50-70 ms). BBR (this machine's default) caps what is in flight at about
// twice its bandwidth x minimum-RTT estimate, and the minimum RTT it keeps is
// the empty-queue one, so the sender to such a host is limited by its own
// cap: a rack gateway feeding one successor took 19.1-21.0 s for 32 MiB
// (1.14-1.25 x the link bound) against 17.7 s alone. A loss-based
// algorithm grows its window over the ACK delay: 17.6-18.1 s with reno or
// cubic; the full fabric (24 hosts, 32 MiB) 20.4 s with cubic, 20.8 s with
// reno, 21.9 s with bbr (bench/README.md).
const DefaultCongestionControl = "cubic"

// SystemCongestionControl keeps the kernel's default congestion control.
const SystemCongestionControl = "system"

// CheckCongestionControl reports whether name can be a congestion control
// setting: "" (the default), "system", or a kernel algorithm name (letters,
// digits, underscores, at most 15: TCP_CA_NAME_MAX). Whether this kernel
// has and allows it is known only at the first socket (a refusal falls
// back to reno, logged once).
func CheckCongestionControl(name string) error {
	ok := len(name) <= 15
	for _, r := range name {
		ok = ok && (r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}
	if !ok {
		return fmt.Errorf("congestion control %q: want an algorithm of this kernel (cubic, reno, bbr: /proc/sys/net/ipv4/tcp_available_congestion_control) or %q for its default", name, SystemCongestionControl)
	}
	return nil
}

// fallbackCongestionControl is tried when the wanted one is refused: every
// Linux kernel has it and allows it to unprivileged sockets.
const fallbackCongestionControl = "reno"

// socketControl is a net.Dialer / net.ListenConfig Control that selects the
// congestion control cc on each TCP socket ("" or "system": no change). A
// refusal (an algorithm the kernel lacks or, without CAP_NET_ADMIN, one not
// in net.ipv4.tcp_allowed_congestion_control) never fails the socket: it is
// logged once and the socket gets reno, or keeps the kernel's default.
type socketControl struct {
	cc     string
	log    *slog.Logger
	warned sync.Once
}

func newSocketControl(cc string, log *slog.Logger) *socketControl {
	if cc == "" {
		cc = DefaultCongestionControl
	}
	if cc == SystemCongestionControl {
		cc = ""
	}
	if log == nil {
		log = slog.Default()
	}
	return &socketControl{cc: cc, log: log}
}

// Control implements the Control hook of net.Dialer and net.ListenConfig.
func (s *socketControl) Control(network, address string, c syscall.RawConn) error {
	if s.cc == "" {
		return nil
	}
	var serr, ferr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, s.cc)
		if serr != nil && s.cc != fallbackCongestionControl {
			ferr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, fallbackCongestionControl)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		got := fallbackCongestionControl
		if ferr != nil || s.cc == fallbackCongestionControl {
			got = "the kernel's default"
		}
		s.warned.Do(func() {
			hint := "the kernel lacks it"
			if errors.Is(serr, unix.EPERM) {
				hint = "not in net.ipv4.tcp_allowed_congestion_control and no CAP_NET_ADMIN"
			}
			s.log.Warn("tcp congestion control refused", "want", s.cc, "err", serr, "why", hint, "using", got)
		})
	}
	return nil
}

// dialer is a dialer with the control, bound to ip when ip is set.
func (s *socketControl) dialer(ip net.IP) *net.Dialer {
	d := &net.Dialer{Timeout: dialTimeout, Control: s.Control, FallbackDelay: -1}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d
}
