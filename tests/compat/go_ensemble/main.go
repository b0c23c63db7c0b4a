// Ensemble suite: the pure-Go ZooKeeper client github.com/samuel/go-zookeeper/zk (Debian
// golang-github-samuel-go-zookeeper-dev) against a three-member ensemble, built in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o suite tests/compat/go_ensemble/main.go
//	./suite HOST:PORT,HOST:PORT,HOST:PORT
//
// It replays the scenarios of the client's own cluster tests (TestBasicCluster,
// TestClientClusterFailover, TestNoQuorum). crates/corral/tests/compat_ensemble.rs owns the
// ensemble; the suite steers it by printing `@@ <command>` lines and reading one answer line
// from stdin each (see run_steering_suite in crates/corral/tests/ensemble_support/mod.rs).
// Prints one line per check, then "N passed, N failed"; the exit code is 1 on any failure.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/samuel/go-zookeeper/zk"
)

// waitLimit bounds every wait; nothing in the suite sleeps for a fixed time to pass a check.
const waitLimit = 20 * time.Second

// sessionTimeout outlasts the elections and reconnects the scenarios cause.
const sessionTimeout = 20 * time.Second

// pollEvery is how often a wait looks at what it waits for.
const pollEvery = 10 * time.Millisecond

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

var harness = bufio.NewReader(os.Stdin)

// steer asks the test harness to act on the ensemble and returns its answer line.
func steer(command string) string {
	fmt.Printf("@@ %s\n", command)
	line, err := harness.ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "no answer from the harness to %q: %v\n", command, err)
		fmt.Printf("%d passed, %d failed\n", passed, failed+1)
		os.Exit(1)
	}
	return strings.TrimSpace(line)
}

// stateLog records the session events of one connection.
type stateLog struct {
	mu     sync.Mutex
	events []zk.Event
}

func newStateLog(ch <-chan zk.Event) *stateLog {
	l := &stateLog{}
	go func() {
		for ev := range ch {
			if ev.Type == zk.EventSession {
				l.mu.Lock()
				l.events = append(l.events, ev)
				l.mu.Unlock()
			}
		}
	}()
	return l
}

func (l *stateLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// waitFor returns the first event with `state` recorded after position `since`, or nil when
// none came within waitLimit.
func (l *stateLog) waitFor(state zk.State, since int) *zk.Event {
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, ev := range l.events[since:] {
			if ev.State == state {
				l.mu.Unlock()
				e := ev
				return &e
			}
		}
		l.mu.Unlock()
		time.Sleep(pollEvery)
	}
	return nil
}

func connect(name string, servers []string) (*zk.Conn, *stateLog) {
	c, ch, err := zk.Connect(servers, sessionTimeout)
	if err != nil {
		check(name+": connect", false, "%v", err)
		fmt.Printf("%d passed, %d failed\n", passed, failed)
		os.Exit(1)
	}
	log := newStateLog(ch)
	ev := log.waitFor(zk.StateHasSession, 0)
	check(name+": session established", ev != nil, "no StateHasSession event")
	return c, log
}

// TestBasicCluster: two clients on different members see each other's writes and watches.
func basicCluster(servers []string) {
	c1, _ := connect("basic c1", servers[:1])
	defer c1.Close()
	c2, _ := connect("basic c2", servers[1:2])
	defer c2.Close()

	_, err := c1.Create("/gozk-cluster", []byte("hello"), 0, zk.WorldACL(zk.PermAll))
	check("basic: create on member 1", err == nil, "%v", err)
	_, err = c2.Sync("/gozk-cluster")
	check("basic: sync on member 2", err == nil, "%v", err)
	data, _, err := c2.Get("/gozk-cluster")
	check("basic: member 2 reads member 1's create", err == nil && string(data) == "hello",
		"%q %v", data, err)

	_, _, watch, err := c2.GetW("/gozk-cluster")
	check("basic: watch set on member 2", err == nil, "%v", err)
	_, err = c1.Set("/gozk-cluster", []byte("changed"), -1)
	check("basic: set on member 1", err == nil, "%v", err)
	select {
	case ev := <-watch:
		check("basic: member 2's watch fires for member 1's set",
			ev.Type == zk.EventNodeDataChanged && ev.Path == "/gozk-cluster", "%+v", ev)
	case <-time.After(waitLimit):
		check("basic: member 2's watch fires for member 1's set", false, "no event")
	}

	// The other direction, with an exists watch on a node not yet there.
	_, _, watch, err = c1.ExistsW("/gozk-cluster-2")
	check("basic: exists watch set on member 1", err == nil, "%v", err)
	_, err = c2.Create("/gozk-cluster-2", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	check("basic: ephemeral create on member 2", err == nil, "%v", err)
	select {
	case ev := <-watch:
		check("basic: member 1's exists watch fires for member 2's create",
			ev.Type == zk.EventNodeCreated && ev.Path == "/gozk-cluster-2", "%+v", ev)
	case <-time.After(waitLimit):
		check("basic: member 1's exists watch fires for member 2's create", false, "no event")
	}
}

// TestClientClusterFailover: kill the member a client is on; the session and its ephemeral
// survive on another member.
func clientClusterFailover(servers []string) {
	c, log := connect("failover", servers)
	defer c.Close()
	session := c.SessionID()
	_, err := c.Create("/gozk-failover", nil, 0, zk.WorldACL(zk.PermAll))
	check("failover: create", err == nil, "%v", err)
	_, err = c.Create("/gozk-failover/eph", []byte("mine"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	check("failover: create ephemeral", err == nil, "%v", err)

	on := c.Server()
	mark := log.mark()
	check("failover: harness kills the client's member", steer("kill "+on) == "ok", "")
	ev := log.waitFor(zk.StateDisconnected, mark)
	check("failover: disconnected from the killed member", ev != nil && ev.Server == on,
		"%+v", ev)
	ev = log.waitFor(zk.StateHasSession, mark)
	check("failover: session re-established", ev != nil, "no StateHasSession event")
	check("failover: on another member", c.Server() != on, "still on %s", on)
	check("failover: same session", c.SessionID() == session, "%x != %x", c.SessionID(), session)
	ok, stat, err := c.Exists("/gozk-failover/eph")
	check("failover: ephemeral survived", err == nil && ok && stat.EphemeralOwner == session,
		"%v %v %+v", ok, err, stat)

	steer("restart " + on)
	steer("wait-stable")
}

// TestNoQuorum: with two of three members down an operation fails (connection loss) or gets
// no answer; once a member returns, the session and operations work again.
func noQuorum(servers []string) {
	c, log := connect("no quorum", servers)
	defer c.Close()
	session := c.SessionID()
	_, err := c.Create("/gozk-noquorum", nil, 0, zk.WorldACL(zk.PermAll))
	check("no quorum: create", err == nil, "%v", err)

	first := c.Server()
	mark := log.mark()
	steer("kill " + first)
	ev := log.waitFor(zk.StateHasSession, mark)
	check("no quorum: session moves after the first kill", ev != nil, "no StateHasSession event")
	second := c.Server()
	check("no quorum: on another member", second != first, "still on %s", first)
	steer("kill " + second)

	// The lone member must not acknowledge the write.
	result := make(chan error, 1)
	go func() {
		_, err := c.Create("/gozk-noquorum/during", nil, 0, zk.WorldACL(zk.PermAll))
		result <- err
	}()
	select {
	case err := <-result:
		check("no quorum: write fails without a quorum", err != nil, "acknowledged")
		result = nil
	case <-time.After(5 * time.Second):
		check("no quorum: write gets no answer without a quorum", true, "")
	}

	mark = log.mark()
	steer("restart " + first)
	steer("wait-stable")
	ev = log.waitFor(zk.StateHasSession, mark)
	if ev == nil && c.State() == zk.StateHasSession {
		// Already back before the mark was taken.
		ev = &zk.Event{State: zk.StateHasSession}
	}
	check("no quorum: session re-established after a member returns", ev != nil, "no event")
	check("no quorum: same session", c.SessionID() == session, "%x != %x", c.SessionID(), session)
	var lastErr error
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if _, lastErr = c.Create("/gozk-noquorum/after", nil, 0, zk.WorldACL(zk.PermAll)); lastErr == nil || lastErr == zk.ErrNodeExists {
			lastErr = nil
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	check("no quorum: writes work again", lastErr == nil, "%v", lastErr)
	if result != nil {
		select {
		case <-result: // the write queued while there was no quorum may now be answered
		case <-time.After(waitLimit):
			check("no quorum: the queued write is answered once a quorum is back", false, "")
		}
	}
	steer("restart " + second)
	steer("wait-stable")
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: suite HOST:PORT,HOST:PORT,HOST:PORT")
		os.Exit(2)
	}
	servers := strings.Split(os.Args[1], ",")
	basicCluster(servers)
	clientClusterFailover(servers)
	noQuorum(servers)
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
