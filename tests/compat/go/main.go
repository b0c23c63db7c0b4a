// Compatibility suite: the pure-Go ZooKeeper client github.com/samuel/go-zookeeper/zk
// (Debian golang-github-samuel-go-zookeeper-dev), built in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tests/compat/go/main.go HOST:PORT
//
// It replays the classic client scenarios (watch demo on /demo, service registration and
// discovery, leader election, multi, ACLs, session events, reconnect with re-sent watches) and
// prints one line per check, then "N passed, N failed"; the exit code is 1 on any failure.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/samuel/go-zookeeper/zk"
)

// waitLimit bounds every wait for an event; nothing in the suite sleeps for a fixed time.
const waitLimit = 10 * time.Second

// connectLimit bounds the wait for a new session: readiness, not a check, so it is generous
// for a loaded machine or a JVM server still warming up (the client retries meanwhile).
const connectLimit = 120 * time.Second

var passed, failed int

func check(name string, ok bool, detail string, args ...interface{}) {
	if ok {
		passed++
		fmt.Printf("PASS %s\n", name)
	} else {
		failed++
		fmt.Printf("FAIL %s: %s\n", name, fmt.Sprintf(detail, args...))
	}
}

func checkErr(name string, err error) bool {
	check(name, err == nil, "%v", err)
	return err == nil
}

func waitEvent(ch <-chan zk.Event) (zk.Event, bool) {
	select {
	case ev := <-ch:
		return ev, true
	case <-time.After(waitLimit):
		return zk.Event{}, false
	}
}

func expectEvent(name string, ch <-chan zk.Event, typ zk.EventType, path string) {
	ev, ok := waitEvent(ch)
	check(name, ok && ev.Type == typ && ev.Path == path, "got %+v (received=%v), want %v %s", ev, ok, typ, path)
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...interface{}) {}

// cuttableDialer hands out connections the suite can sever, and can refuse new ones for a while,
// to simulate a network cut without the client closing its session.
type cuttableDialer struct {
	mu      sync.Mutex
	blocked bool
	conns   []net.Conn
}

func (d *cuttableDialer) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.blocked {
		return nil, errors.New("partitioned by the test")
	}
	c, err := net.DialTimeout(network, address, timeout)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cuttableDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.blocked = true
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *cuttableDialer) heal() {
	d.mu.Lock()
	d.blocked = false
	d.mu.Unlock()
}

type client struct {
	conn   *zk.Conn
	events <-chan zk.Event
	once   sync.Once
}

// close may be called twice (explicitly and deferred); this client version panics on a second Close.
func (c *client) close() {
	c.once.Do(c.conn.Close)
}

// connect opens a session and waits for it; `dial` (optional) routes the TCP connections.
func connect(server string, dial zk.Dialer) (*client, error) {
	var conn *zk.Conn
	var events <-chan zk.Event
	var err error
	if dial != nil {
		conn, events, err = zk.Connect([]string{server}, 4*time.Second, zk.WithLogger(quietLogger{}), zk.WithDialer(dial))
	} else {
		conn, events, err = zk.Connect([]string{server}, 4*time.Second, zk.WithLogger(quietLogger{}))
	}
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, events: events}
	if !c.awaitStateWithin(zk.StateHasSession, connectLimit) {
		conn.Close()
		return nil, fmt.Errorf("no session within %v", connectLimit)
	}
	return c, nil
}

// awaitState consumes session events until `want` is seen.
func (c *client) awaitState(want zk.State) bool {
	return c.awaitStateWithin(want, waitLimit)
}

// awaitStateWithin is awaitState with its own bound.
func (c *client) awaitStateWithin(want zk.State, limit time.Duration) bool {
	deadline := time.After(limit)
	for {
		select {
		case ev := <-c.events:
			if ev.Type == zk.EventSession && ev.State == want {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

var acl = zk.WorldACL(zk.PermAll)

func watchDemo(server string) {
	c, err := connect(server, nil)
	if !checkErr("demo: connect", err) {
		return
	}
	defer c.close()
	conn := c.conn

	found, _, ch, err := conn.ExistsW("/demo")
	check("demo: ExistsW on missing /demo", err == nil && !found, "found=%v err=%v", found, err)
	_, err = conn.Create("/demo", []byte("v0"), 0, acl)
	checkErr("demo: create /demo", err)
	expectEvent("demo: ExistsW -> EventNodeCreated", ch, zk.EventNodeCreated, "/demo")

	data, stat, ch, err := conn.GetW("/demo")
	check("demo: GetW data and stat", err == nil && string(data) == "v0" && stat.Version == 0, "data=%q stat=%+v err=%v", data, stat, err)
	stat, err = conn.Set("/demo", []byte("v1"), 0)
	check("demo: Set bumps version", err == nil && stat.Version == 1, "stat=%+v err=%v", stat, err)
	expectEvent("demo: GetW -> EventNodeDataChanged", ch, zk.EventNodeDataChanged, "/demo")
	_, err = conn.Set("/demo", []byte("v2"), 0)
	check("demo: Set with stale version -> ErrBadVersion", err == zk.ErrBadVersion, "err=%v", err)

	children, _, ch, err := conn.ChildrenW("/demo")
	check("demo: ChildrenW empty", err == nil && len(children) == 0, "children=%v err=%v", children, err)
	_, err = conn.Create("/demo/child", nil, 0, acl)
	checkErr("demo: create child", err)
	expectEvent("demo: ChildrenW -> EventNodeChildrenChanged (create)", ch, zk.EventNodeChildrenChanged, "/demo")
	_, _, ch, _ = conn.ChildrenW("/demo")
	checkErr("demo: delete child", conn.Delete("/demo/child", -1))
	expectEvent("demo: ChildrenW -> EventNodeChildrenChanged (delete)", ch, zk.EventNodeChildrenChanged, "/demo")

	_, _, ch, _ = conn.ExistsW("/demo")
	err = conn.Delete("/demo", 5)
	check("demo: Delete with wrong version -> ErrBadVersion", err == zk.ErrBadVersion, "err=%v", err)
	checkErr("demo: delete /demo", conn.Delete("/demo", 1))
	expectEvent("demo: ExistsW -> EventNodeDeleted", ch, zk.EventNodeDeleted, "/demo")
	_, _, err = conn.Get("/demo")
	check("demo: Get deleted -> ErrNoNode", err == zk.ErrNoNode, "err=%v", err)
}

func serviceDiscovery(server string) {
	disco, err := connect(server, nil)
	if !checkErr("services: connect discovery", err) {
		return
	}
	defer disco.close()
	_, err = disco.conn.Create("/go_servers", nil, 0, acl)
	checkErr("services: create /go_servers", err)

	var servers []*client
	for i := 0; i < 3; i++ {
		s, err := connect(server, nil)
		if !checkErr(fmt.Sprintf("services: connect server %d", i), err) {
			return
		}
		defer s.close()
		_, err = s.conn.Create(fmt.Sprintf("/go_servers/10.0.0.%d:80", i), []byte("up"), zk.FlagEphemeral, acl)
		checkErr(fmt.Sprintf("services: register server %d", i), err)
		servers = append(servers, s)
	}
	children, _, ch, err := disco.conn.ChildrenW("/go_servers")
	sort.Strings(children)
	check("services: discovery sees 3 servers", err == nil && strings.Join(children, ",") == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80", "children=%v err=%v", children, err)
	_, stat, _ := disco.conn.Exists("/go_servers/10.0.0.1:80")
	check("services: ephemeralOwner is registering session", stat != nil && stat.EphemeralOwner == servers[1].conn.SessionID(), "stat=%+v", stat)

	servers[1].close()
	expectEvent("services: session close -> EventNodeChildrenChanged", ch, zk.EventNodeChildrenChanged, "/go_servers")
	children, _, err = disco.conn.Children("/go_servers")
	sort.Strings(children)
	check("services: closed server deregistered", err == nil && strings.Join(children, ",") == "10.0.0.0:80,10.0.0.2:80", "children=%v err=%v", children, err)
}

func leaderOf(children []string) string {
	sort.Strings(children)
	if len(children) == 0 {
		return ""
	}
	return children[0]
}

func election(server string) {
	observer, err := connect(server, nil)
	if !checkErr("election: connect observer", err) {
		return
	}
	defer observer.close()
	_, err = observer.conn.Create("/go_election", nil, 0, acl)
	checkErr("election: create /go_election", err)

	type candidate struct {
		c    *client
		node string
	}
	var cands []candidate
	for i := 0; i < 3; i++ {
		c, err := connect(server, nil)
		if !checkErr(fmt.Sprintf("election: connect candidate %d", i), err) {
			return
		}
		defer c.close()
		node, err := c.conn.Create("/go_election/n_", []byte(fmt.Sprint(i)), zk.FlagEphemeral|zk.FlagSequence, acl)
		check(fmt.Sprintf("election: candidate %d sequential name", i), err == nil && node == fmt.Sprintf("/go_election/n_%010d", i), "node=%q err=%v", node, err)
		cands = append(cands, candidate{c, node})
	}
	children, _, ch, err := observer.conn.ChildrenW("/go_election")
	leader := leaderOf(children)
	check("election: lowest sequence is leader", err == nil && "/go_election/"+leader == cands[0].node, "children=%v err=%v", children, err)

	// The leader goes away; the observer re-reads with ChildrenW until leadership moves.
	cands[0].c.close()
	newLeader := leader
	for newLeader == leader {
		if _, ok := waitEvent(ch); !ok {
			break
		}
		children, _, ch, err = observer.conn.ChildrenW("/go_election")
		if err != nil {
			break
		}
		newLeader = leaderOf(children)
	}
	check("election: next candidate takes over", "/go_election/"+newLeader == cands[1].node, "leader=%q children=%v err=%v", newLeader, children, err)
	node, err := cands[2].c.conn.Create("/go_election/n_", nil, zk.FlagEphemeral|zk.FlagSequence, acl)
	check("election: sequence keeps counting after a leader left", err == nil && node == "/go_election/n_0000000003", "node=%q err=%v", node, err)
}

func multi(server string) {
	c, err := connect(server, nil)
	if !checkErr("multi: connect", err) {
		return
	}
	defer c.close()
	conn := c.conn
	_, err = conn.Create("/go_multi", []byte("0"), 0, acl)
	checkErr("multi: create base", err)
	res, err := conn.Multi(
		&zk.CreateRequest{Path: "/go_multi/a", Data: []byte("a"), Acl: acl},
		&zk.SetDataRequest{Path: "/go_multi", Data: []byte("1"), Version: 0},
		&zk.CheckVersionRequest{Path: "/go_multi", Version: 1},
		&zk.DeleteRequest{Path: "/go_multi/a", Version: 0},
	)
	check("multi: commit succeeds", err == nil && len(res) == 4, "res=%+v err=%v", res, err)
	if err == nil && len(res) == 4 {
		check("multi: create result path", res[0].String == "/go_multi/a", "res=%+v", res[0])
		check("multi: setData result stat", res[1].Stat != nil && res[1].Stat.Version == 1, "res=%+v", res[1])
	}
	res, err = conn.Multi(
		&zk.CreateRequest{Path: "/go_multi/b", Data: nil, Acl: acl},
		&zk.CheckVersionRequest{Path: "/go_multi", Version: 0},
	)
	check("multi: failed check aborts with ErrBadVersion", err == zk.ErrBadVersion, "err=%v res=%+v", err, res)
	exists, _, _ := conn.Exists("/go_multi/b")
	check("multi: nothing applied on failure", !exists, "b exists")
	data, _, _ := conn.Get("/go_multi")
	check("multi: committed data visible", string(data) == "1", "data=%q", data)
}

func aclAuth(server string) {
	owner, err := connect(server, nil)
	if !checkErr("acl: connect owner", err) {
		return
	}
	defer owner.close()
	stranger, err := connect(server, nil)
	if !checkErr("acl: connect stranger", err) {
		return
	}
	defer stranger.close()
	checkErr("acl: AddAuth digest", owner.conn.AddAuth("digest", []byte("gopher:secret")))
	digest := zk.DigestACL(zk.PermAll, "gopher", "secret")
	_, err = owner.conn.Create("/go_secret", []byte("s"), 0, digest)
	checkErr("acl: create with digest ACL", err)
	_, _, err = stranger.conn.Get("/go_secret")
	check("acl: stranger read -> ErrNoAuth", err == zk.ErrNoAuth, "err=%v", err)
	data, _, err := owner.conn.Get("/go_secret")
	check("acl: owner reads", err == nil && string(data) == "s", "data=%q err=%v", data, err)
	acls, stat, err := owner.conn.GetACL("/go_secret")
	check("acl: GetACL returns digest entry", err == nil && len(acls) == 1 && acls[0].Scheme == "digest" && acls[0].ID == digest[0].ID && acls[0].Perms == zk.PermAll, "acls=%+v err=%v", acls, err)
	stat, err = owner.conn.SetACL("/go_secret", zk.WorldACL(zk.PermRead), stat.Aversion)
	check("acl: SetACL bumps aversion", err == nil && stat.Aversion == 1, "stat=%+v err=%v", stat, err)
	_, err = stranger.conn.Set("/go_secret", []byte("x"), -1)
	check("acl: READ-only -> write ErrNoAuth", err == zk.ErrNoAuth, "err=%v", err)
	_, err = owner.conn.Create("/go_badacl", nil, 0, []zk.ACL{{Perms: zk.PermAll, Scheme: "nosuch", ID: "x"}})
	check("acl: unknown scheme -> ErrInvalidACL", err == zk.ErrInvalidACL, "err=%v", err)
	p, err := owner.conn.Sync("/go_secret")
	check("acl: Sync returns path", err == nil && p == "/go_secret", "p=%q err=%v", p, err)
}

func sessionEvents(server string) {
	conn, events, err := zk.Connect([]string{server}, 4*time.Second, zk.WithLogger(quietLogger{}))
	if !checkErr("session: connect", err) {
		return
	}
	var seen []string
	deadline := time.After(waitLimit)
loop:
	for {
		select {
		case ev := <-events:
			seen = append(seen, ev.State.String())
			if ev.State == zk.StateHasSession {
				break loop
			}
		case <-deadline:
			break loop
		}
	}
	check("session: Connecting -> Connected -> HasSession", strings.Join(seen, ",") == "StateConnecting,StateConnected,StateHasSession", "states=%v", seen)
	check("session: non-zero session id", conn.SessionID() != 0, "id=%d", conn.SessionID())
	conn.Close()
	ev, ok := waitEvent(events)
	check("session: Close -> StateDisconnected", ok && ev.State == zk.StateDisconnected, "ev=%+v ok=%v", ev, ok)
}

// reconnect cuts the watcher's TCP connection; while it is away another client changes the
// watched nodes; go-zookeeper re-sends its watches (SetWatches) when it reconnects to the same
// session, and the server must deliver what was missed.
func reconnect(server string) {
	writer, err := connect(server, nil)
	if !checkErr("reconnect: connect writer", err) {
		return
	}
	defer writer.close()
	for _, p := range []string{"/go_rw", "/go_rw/data", "/go_rw/gone"} {
		_, err = writer.conn.Create(p, nil, 0, acl)
		checkErr("reconnect: create "+p, err)
	}
	dialer := &cuttableDialer{}
	w, err := connect(server, dialer.dial)
	if !checkErr("reconnect: connect watcher", err) {
		return
	}
	defer w.close()
	session := w.conn.SessionID()
	_, _, dataCh, _ := w.conn.GetW("/go_rw/data")
	_, _, goneCh, _ := w.conn.ExistsW("/go_rw/gone")
	_, _, bornCh, _ := w.conn.ExistsW("/go_rw/born")
	_, _, kidsCh, _ := w.conn.ChildrenW("/go_rw")

	dialer.cut()
	check("reconnect: watcher notices the cut", w.awaitState(zk.StateDisconnected), "no StateDisconnected")
	_, err = writer.conn.Set("/go_rw/data", []byte("x"), -1)
	checkErr("reconnect: change while away", err)
	checkErr("reconnect: delete while away", writer.conn.Delete("/go_rw/gone", -1))
	_, err = writer.conn.Create("/go_rw/born", nil, 0, acl)
	checkErr("reconnect: create while away", err)
	dialer.heal()
	check("reconnect: session re-established", w.awaitState(zk.StateHasSession), "no StateHasSession")
	check("reconnect: same session id", w.conn.SessionID() == session, "%d != %d", w.conn.SessionID(), session)
	expectEvent("reconnect: missed data change delivered", dataCh, zk.EventNodeDataChanged, "/go_rw/data")
	expectEvent("reconnect: missed delete delivered", goneCh, zk.EventNodeDeleted, "/go_rw/gone")
	expectEvent("reconnect: missed create delivered", bornCh, zk.EventNodeCreated, "/go_rw/born")
	expectEvent("reconnect: missed child change delivered", kidsCh, zk.EventNodeChildrenChanged, "/go_rw")
}

// expiry drops a client's connection for good; its ephemeral must go once the session expires.
func expiry(server string) {
	observer, err := connect(server, nil)
	if !checkErr("expiry: connect observer", err) {
		return
	}
	defer observer.close()
	dialer := &cuttableDialer{}
	victim, _, err := zk.Connect([]string{server}, 800*time.Millisecond, zk.WithLogger(quietLogger{}), zk.WithDialer(dialer.dial))
	if !checkErr("expiry: connect victim", err) {
		return
	}
	defer victim.Close()
	var created error = errors.New("not attempted")
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if _, created = victim.Create("/go_expiring", nil, zk.FlagEphemeral, acl); created != zk.ErrNoServer && created != zk.ErrConnectionClosed {
			break
		}
	}
	checkErr("expiry: victim creates ephemeral", created)
	_, _, ch, err := observer.conn.ExistsW("/go_expiring")
	checkErr("expiry: observer watches it", err)
	dialer.cut()
	expectEvent("expiry: ephemeral deleted after session expiry", ch, zk.EventNodeDeleted, "/go_expiring")
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run main.go HOST:PORT")
		os.Exit(2)
	}
	server := os.Args[1]
	watchDemo(server)
	serviceDiscovery(server)
	election(server)
	multi(server)
	aclAuth(server)
	sessionEvents(server)
	reconnect(server)
	expiry(server)
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
