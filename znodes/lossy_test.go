package znodes

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// lossyProxy forwards ZooKeeper client connections to a server and, when
// armed with an opcode, lets the next request with that opcode reach the
// server but drops its response and closes the connection: a write whose
// outcome the client cannot know. It parses the protocol's frames (a 4-byte
// length first; after the connect handshake requests carry xid and opcode,
// responses carry xid first).
type lossyProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu      sync.Mutex
	armOp   int32 // opcode whose response to drop, 0 = none
	lostReq bool  // drop the armed request itself (never applied), not its response
	dropped chan struct{}
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newLossyProxy(t *testing.T, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lossy proxy: %v", err)
	}
	p := &lossyProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *lossyProxy) Addr() string { return p.ln.Addr().String() }

// arm drops the response of the next request with opcode op; the returned
// channel is closed once a response was dropped.
func (p *lossyProxy) arm(op int32) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armOp, p.lostReq = op, false
	p.dropped = make(chan struct{})
	return p.dropped
}

// armLost drops the next request with opcode op before it reaches the
// server and closes the connection: a write that was never applied, as
// when the ZooKeeper leader dies before committing it.
func (p *lossyProxy) armLost(op int32) <-chan struct{} {
	ch := p.arm(op)
	p.mu.Lock()
	p.lostReq = true
	p.mu.Unlock()
	return ch
}

func (p *lossyProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *lossyProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		pc := &proxiedConn{p: p, client: client, server: server, victim: -1}
		p.wg.Add(2)
		go pc.up()
		go pc.down()
	}
}

type proxiedConn struct {
	p              *lossyProxy
	client, server net.Conn
	mu             sync.Mutex
	victim         int32 // xid whose response to drop, -1 = none
}

func (pc *proxiedConn) kill() {
	pc.client.Close()
	pc.server.Close()
}

// up copies client -> server, noting the xid of an armed request.
func (pc *proxiedConn) up() {
	defer pc.p.wg.Done()
	defer pc.kill()
	first := true
	for {
		frame, err := readFrame(pc.client)
		if err != nil {
			return
		}
		if !first && len(frame) >= 12 {
			xid := int32(binary.BigEndian.Uint32(frame[4:8]))
			op := int32(binary.BigEndian.Uint32(frame[8:12]))
			pc.p.mu.Lock()
			if pc.p.armOp != 0 && op == pc.p.armOp {
				pc.p.armOp = 0
				if pc.p.lostReq {
					close(pc.p.dropped)
					pc.p.mu.Unlock()
					return // never forwarded
				}
				pc.mu.Lock()
				pc.victim = xid
				pc.mu.Unlock()
			}
			pc.p.mu.Unlock()
		}
		first = false
		if _, err := pc.server.Write(frame); err != nil {
			return
		}
	}
}

// down copies server -> client, dropping the victim's response and the connection with it.
func (pc *proxiedConn) down() {
	defer pc.p.wg.Done()
	defer pc.kill()
	first := true
	for {
		frame, err := readFrame(pc.server)
		if err != nil {
			return
		}
		if !first && len(frame) >= 8 {
			xid := int32(binary.BigEndian.Uint32(frame[4:8]))
			pc.mu.Lock()
			hit := pc.victim >= 0 && xid == pc.victim
			pc.mu.Unlock()
			if hit {
				pc.p.mu.Lock()
				close(pc.p.dropped)
				pc.p.mu.Unlock()
				return // the server applied the request; the client never hears
			}
		}
		first = false
		if _, err := pc.client.Write(frame); err != nil {
			return
		}
	}
}

func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 4<<20 {
		return nil, errors.New("frame too large")
	}
	frame := make([]byte, 4+n)
	copy(frame, hdr[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		return nil, err
	}
	return frame, nil
}
