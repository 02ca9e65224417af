package zkserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a target, and can
// simulate a network partition: Cut closes every connection and black-holes
// new ones (accepted, never answered) until Restore, which closes them so
// that clients reconnect at once. A ZooKeeper client that connects through
// the proxy loses its session if the cut lasts longer than the session
// timeout, and learns it only after Restore.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // accept loop and every forwarding goroutine

	mu     sync.Mutex
	cut    bool
	closed bool
	live   map[net.Conn]struct{} // forwarded connections, both ends
	held   map[net.Conn]struct{} // accepted during a cut
}

// NewProxy listens on 127.0.0.1:0 and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("zkserver: proxy listen: %w", err)
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		live:   make(map[net.Conn]struct{}),
		held:   make(map[net.Conn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut closes all current connections and black-holes new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.live {
		c.Close()
	}
	clear(p.live)
}

// Restore ends a cut: connections accepted during it are closed, new ones
// are forwarded again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	for c := range p.held {
		c.Close()
	}
	clear(p.held)
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for c := range p.live {
		c.Close()
	}
	for c := range p.held {
		c.Close()
	}
	clear(p.live)
	clear(p.held)
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		p.mu.Lock()
		switch {
		case p.closed:
			c.Close()
		case p.cut:
			p.held[c] = struct{}{}
		default:
			p.live[c] = struct{}{}
			p.wg.Add(1)
			go p.forward(c)
		}
		p.mu.Unlock()
	}
}

// forward dials the target and copies both ways until either side ends or
// the connection is cut.
func (p *Proxy) forward(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if _, ok := p.live[c]; !ok { // cut or closed while dialing
		p.mu.Unlock()
		up.Close()
		return
	}
	p.live[up] = struct{}{}
	p.mu.Unlock()

	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(up, c)
		p.drop(c, up)
	}()
	io.Copy(c, up)
	p.drop(c, up)
}

func (p *Proxy) drop(conns ...net.Conn) {
	p.mu.Lock()
	for _, c := range conns {
		delete(p.live, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
