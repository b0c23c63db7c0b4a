// Apache Curator (Debian libcurator-{client,framework,recipes}-java, Curator 5) against a
// ZooKeeper-compatible server, compiled and run by crates/corral/tests:
//
//   javac -cp CP -d OUT tests/compat/curator/CuratorSuite.java
//   java -cp OUT:CP CuratorSuite HOST:PORT[,HOST:PORT...] standalone|ensemble
//
// where CP is /usr/share/java/curator-recipes.jar:curator-framework.jar:curator-client.jar:
// zookeeper.jar (their manifests name the rest). "standalone" runs what needs one server:
// connection states, reads and writes, InterProcessMutex, LeaderLatch and CuratorCache.
// "ensemble" adds what needs three members: EnsembleTracker reading /zookeeper/config, and the
// connection states and recipes across a member's death and the loss of the quorum. The
// ensemble is steered through the test harness: the suite prints `@@ <command>` and reads one
// answer line from stdin (run_steering_suite in crates/corral/tests/ensemble_support/mod.rs).
// Prints one line per check, then "N passed, N failed"; the exit code is 1 on any failure.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.framework.state.ConnectionStateListener;
import org.apache.curator.retry.RetryForever;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.data.Stat;

public final class CuratorSuite {
    /** Bounds every wait; nothing sleeps for a fixed time to pass a check. */
    static final long WAIT_MS = 30_000;
    /** Clients that must keep their session across a failover. */
    static final int LONG_SESSION_MS = 15_000;
    /**
     * Clients whose session is meant to expire: 2 x tickTime, the least a server with
     * tickTime=2000 grants (a standalone test server with a shorter tick grants less).
     */
    static final int SHORT_SESSION_MS = 4_000;
    /** How long a connection attempt may take before Curator retries. */
    static final int CONNECTION_TIMEOUT_MS = 5_000;
    /** Pause between two polls of a wait, and between retries of a lost connection. */
    static final int POLL_MS = 10;
    static final int RETRY_MS = 100;
    static final String ROOT = "/curator-suite";

    static int passed;
    static int failed;
    static final BufferedReader HARNESS =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    static final List<CuratorFramework> CLIENTS = new ArrayList<>();

    static void check(String name, boolean ok, String detail) {
        if (ok) {
            passed++;
            System.out.println("PASS " + name);
        } else {
            failed++;
            System.out.println("FAIL " + name + ": " + detail);
        }
        System.out.flush();
    }

    /** Asks the harness to act on the ensemble; returns its answer line. */
    static String steer(String command) throws Exception {
        System.out.println("@@ " + command);
        System.out.flush();
        String line = HARNESS.readLine();
        if (line == null) {
            throw new IllegalStateException("no answer from the harness to " + command);
        }
        return line.trim();
    }

    static boolean waitUntil(BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS);
        while (System.nanoTime() < deadline) {
            if (condition.getAsBoolean()) {
                return true;
            }
            Thread.sleep(POLL_MS);
        }
        return condition.getAsBoolean();
    }

    /** Every connection state a client went through, in order. */
    static final class StateLog implements ConnectionStateListener {
        private final List<ConnectionState> states = new ArrayList<>();

        @Override
        public synchronized void stateChanged(CuratorFramework client, ConnectionState state) {
            states.add(state);
        }

        synchronized int mark() {
            return states.size();
        }

        synchronized List<ConnectionState> since(int from) {
            return new ArrayList<>(states.subList(from, states.size()));
        }

        /** Index of the first `state` at or after `from`, or -1 if none came in time. */
        int waitFor(ConnectionState state, int from) throws InterruptedException {
            int[] found = {-1};
            waitUntil(() -> {
                synchronized (this) {
                    for (int i = from; i < states.size(); i++) {
                        if (states.get(i) == state) {
                            found[0] = i;
                            return true;
                        }
                    }
                    return false;
                }
            });
            return found[0];
        }
    }

    /**
     * A started client. Curator's EnsembleTracker (on by default) replaces `hosts` with every
     * member named in /zookeeper/config; a client meant to stay on the members it names has
     * `pinned` set, which turns the tracker off.
     */
    static CuratorFramework client(String hosts, int sessionMs, StateLog log, boolean pinned) {
        CuratorFramework c = CuratorFrameworkFactory.builder()
                .connectString(hosts)
                .ensembleTracker(!pinned)
                .sessionTimeoutMs(sessionMs)
                .connectionTimeoutMs(CONNECTION_TIMEOUT_MS)
                .retryPolicy(new RetryForever(RETRY_MS))
                .build();
        if (log != null) {
            c.getConnectionStateListenable().addListener(log);
        }
        c.start();
        CLIENTS.add(c);
        return c;
    }

    static CuratorFramework connected(String name, String hosts, int sessionMs, StateLog log)
            throws Exception {
        return connected(name, hosts, sessionMs, log, false);
    }

    static CuratorFramework connected(String name, String hosts, int sessionMs, StateLog log, boolean pinned)
            throws Exception {
        CuratorFramework c = client(hosts, sessionMs, log, pinned);
        boolean ok = c.blockUntilConnected((int) WAIT_MS, TimeUnit.MILLISECONDS);
        check(name + ": connected", ok, "not connected within " + WAIT_MS + " ms");
        if (!ok) {
            throw new IllegalStateException(name + " could not connect");
        }
        return c;
    }

    static long sessionId(CuratorFramework c) throws Exception {
        return c.getZookeeperClient().getZooKeeper().getSessionId();
    }

    /** `HOST:PORT` of the server the client is connected to (from ZooKeeper's toString). */
    static String currentServer(CuratorFramework c) throws Exception {
        String text = c.getZookeeperClient().getZooKeeper().toString();
        int at = text.indexOf("remoteserver:");
        if (at < 0) {
            throw new IllegalStateException("no remoteserver in " + text);
        }
        String addr = text.substring(at + "remoteserver:".length()).split(" ", 2)[0];
        return addr.substring(addr.lastIndexOf('/') + 1);
    }

    static String text(byte[] data) {
        return data == null ? "null" : new String(data, StandardCharsets.UTF_8);
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    // -----------------------------------------------------------------------------------

    static void basics(String hosts) throws Exception {
        StateLog log = new StateLog();
        CuratorFramework c = connected("basics", hosts, LONG_SESSION_MS, log);
        check("basics: first state is CONNECTED",
                log.waitFor(ConnectionState.CONNECTED, 0) == 0, "states " + log.since(0));
        String path = ROOT + "/basics/node";
        c.create().creatingParentsIfNeeded().forPath(path, bytes("one"));
        check("basics: create then read", "one".equals(text(c.getData().forPath(path))), "");
        Stat stat = c.setData().withVersion(0).forPath(path, bytes("two"));
        check("basics: versioned set", stat.getVersion() == 1 && "two".equals(text(c.getData().forPath(path))),
                "version " + stat.getVersion());
        c.delete().deletingChildrenIfNeeded().forPath(ROOT + "/basics");
        check("basics: recursive delete", c.checkExists().forPath(ROOT + "/basics") == null, "still there");
        c.close();
    }

    static void recipes(String hosts) throws Exception {
        CuratorFramework a = connected("recipes a", hosts, LONG_SESSION_MS, null);
        CuratorFramework b = connected("recipes b", hosts, LONG_SESSION_MS, null);

        InterProcessMutex ma = new InterProcessMutex(a, ROOT + "/mutex");
        InterProcessMutex mb = new InterProcessMutex(b, ROOT + "/mutex");
        check("mutex: a acquires", ma.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "timed out");
        check("mutex: b cannot while a holds", !mb.acquire(200, TimeUnit.MILLISECONDS), "b acquired it too");
        ma.release();
        check("mutex: b acquires after a released", mb.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "timed out");
        mb.release();

        LeaderLatch la = new LeaderLatch(a, ROOT + "/latch", "a");
        LeaderLatch lb = new LeaderLatch(b, ROOT + "/latch", "b");
        AtomicBoolean twoLeaders = new AtomicBoolean();
        Thread sampler = leaderSampler(la, lb, twoLeaders);
        la.start();
        lb.start();
        check("latch: one of two leads", waitUntil(() -> la.hasLeadership() ^ lb.hasLeadership()), "none leads");
        LeaderLatch holder = la.hasLeadership() ? la : lb;
        LeaderLatch other = holder == la ? lb : la;
        holder.close();
        check("latch: the other leads once the holder left", other.await(WAIT_MS, TimeUnit.MILLISECONDS),
                "no new leader");
        sampler.interrupt();
        sampler.join();
        check("latch: never two leaders", !twoLeaders.get(), "both had leadership at once");
        other.close();

        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        String dir = ROOT + "/cache";
        CuratorCache cache = cacheOf(b, dir, events);
        String child = dir + "/child";
        // One change at a time: the cache reads a node after its event, so a node changed
        // again before that read would show its later state instead.
        List<String> seen = new ArrayList<>();
        a.create().creatingParentsIfNeeded().forPath(child, bytes("v1"));
        seen.add(events.poll(WAIT_MS, TimeUnit.MILLISECONDS));
        a.setData().forPath(child, bytes("v2"));
        seen.add(events.poll(WAIT_MS, TimeUnit.MILLISECONDS));
        a.delete().forPath(child);
        seen.add(events.poll(WAIT_MS, TimeUnit.MILLISECONDS));
        check("CuratorCache: created, changed, deleted",
                seen.equals(Arrays.asList("created " + child, "changed " + child + " v2", "deleted " + child)),
                "events " + seen);
        cache.close();
        a.close();
        b.close();
    }

    /** Events of `client`'s cache of `dir`, for the nodes below it, as text. */
    static CuratorCache cacheOf(CuratorFramework client, String dir, BlockingQueue<String> events) {
        CuratorCache cache = CuratorCache.build(client, dir);
        String prefix = dir + "/";
        cache.listenable().addListener(CuratorCacheListener.builder()
                .forCreates(n -> {
                    if (n.getPath().startsWith(prefix)) {
                        events.add("created " + n.getPath());
                    }
                })
                .forChanges((old, n) -> {
                    if (n.getPath().startsWith(prefix)) {
                        events.add("changed " + n.getPath() + " " + text(n.getData()));
                    }
                })
                .forDeletes(old -> {
                    if (old.getPath().startsWith(prefix)) {
                        events.add("deleted " + old.getPath());
                    }
                })
                .build());
        cache.start();
        return cache;
    }

    /** Sets `twoLeaders` if it ever sees both latches leading at once; stop by interrupt. */
    static Thread leaderSampler(LeaderLatch x, LeaderLatch y, AtomicBoolean twoLeaders) {
        Thread t = new Thread(() -> {
            while (!Thread.currentThread().isInterrupted()) {
                if (x.hasLeadership() && y.hasLeadership()) {
                    twoLeaders.set(true);
                }
                try {
                    Thread.sleep(1);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        t.setDaemon(true);
        t.start();
        return t;
    }

    // -----------------------------------------------------------------------------------

    static Set<String> hostSet(String connectString) {
        Set<String> out = new TreeSet<>();
        for (String h : connectString.split(",")) {
            if (!h.isBlank()) {
                out.add(h.trim());
            }
        }
        return out;
    }

    /** Curator's EnsembleTracker reads /zookeeper/config and widens a one-member connect string. */
    static void ensembleTracker(List<String> members) throws Exception {
        CuratorFramework c = connected("EnsembleTracker", members.get(0), LONG_SESSION_MS, null);
        Set<String> want = new TreeSet<>(members);
        boolean ok = waitUntil(() -> hostSet(c.getZookeeperClient().getCurrentConnectionString()).equals(want));
        check("EnsembleTracker: connect string names every member", ok,
                "connect string " + c.getZookeeperClient().getCurrentConnectionString() + ", config "
                        + text(c.getConfig().forEnsemble()));
        c.close();
    }

    /**
     * The member a client is on dies: the client keeps its session on another member
     * (SUSPENDED, RECONNECTED, ephemeral kept); a client that can reach only that member loses
     * its session (SUSPENDED, LOST), and its lock and leadership pass to a client elsewhere.
     */
    static void failover(List<String> members) throws Exception {
        String all = String.join(",", members);
        StateLog cLog = new StateLog();
        CuratorFramework c = connected("failover c", all, LONG_SESSION_MS, cLog);
        String x = currentServer(c);
        String y = members.stream().filter(m -> !m.equals(x)).findFirst().orElseThrow();
        long cSession = sessionId(c);
        String eph = ROOT + "/failover/ephemeral";
        c.create().creatingParentsIfNeeded().withMode(CreateMode.EPHEMERAL).forPath(eph);
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        String dir = ROOT + "/failover/cache";
        c.create().creatingParentsIfNeeded().forPath(dir);
        CuratorCache cache = cacheOf(c, dir, events);

        StateLog hLog = new StateLog();
        CuratorFramework h = connected("failover h (only " + x + ")", x, SHORT_SESSION_MS, hLog, true);
        CuratorFramework o = connected("failover o (only " + y + ")", y, LONG_SESSION_MS, null, true);
        long hSession = sessionId(h);

        LeaderLatch lh = new LeaderLatch(h, ROOT + "/failover/latch", "h");
        LeaderLatch lo = new LeaderLatch(o, ROOT + "/failover/latch", "o");
        AtomicBoolean twoLeaders = new AtomicBoolean();
        Thread sampler = leaderSampler(lh, lo, twoLeaders);
        lh.start();
        check("failover: h leads", lh.await(WAIT_MS, TimeUnit.MILLISECONDS), "no leadership");
        lo.start();
        InterProcessMutex mh = new InterProcessMutex(h, ROOT + "/failover/mutex");
        InterProcessMutex mo = new InterProcessMutex(o, ROOT + "/failover/mutex");
        check("failover: h holds the mutex", mh.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "timed out");
        // A mutex belongs to the thread that acquired it: o's is taken and released on one.
        ExecutorService oThread = Executors.newSingleThreadExecutor();
        Future<Boolean> oLocks = oThread.submit(() -> mo.acquire(3 * WAIT_MS, TimeUnit.MILLISECONDS));

        int cMark = cLog.mark();
        int hMark = hLog.mark();
        steer("kill " + x);

        int suspended = cLog.waitFor(ConnectionState.SUSPENDED, cMark);
        int reconnected = suspended < 0 ? -1 : cLog.waitFor(ConnectionState.RECONNECTED, suspended);
        check("failover: c SUSPENDED then RECONNECTED", suspended >= 0 && reconnected > suspended,
                "states " + cLog.since(cMark));
        check("failover: c keeps its session", sessionId(c) == cSession,
                String.format("0x%x became 0x%x", cSession, sessionId(c)));
        Stat ephStat = c.checkExists().forPath(eph);
        check("failover: c's ephemeral kept", ephStat != null && ephStat.getEphemeralOwner() == cSession,
                "stat " + ephStat);
        check("failover: c now on another member", !x.equals(currentServer(c)), "still on " + x);

        int hSuspended = hLog.waitFor(ConnectionState.SUSPENDED, hMark);
        int hLost = hSuspended < 0 ? -1 : hLog.waitFor(ConnectionState.LOST, hSuspended);
        check("failover: h SUSPENDED then LOST", hSuspended >= 0 && hLost > hSuspended,
                "states " + hLog.since(hMark));
        check("failover: leadership passes to o", lo.await(WAIT_MS, TimeUnit.MILLISECONDS), "o never led");
        check("failover: the mutex passes to o", oLocks.get(3 * WAIT_MS, TimeUnit.MILLISECONDS), "o never got it");

        o.create().forPath(dir + "/after", bytes("written via " + y));
        String event = events.poll(WAIT_MS, TimeUnit.MILLISECONDS);
        check("failover: c's cache sees a write made after the failover",
                ("created " + dir + "/after").equals(event), "event " + event);

        steer("restart " + x);
        steer("wait-stable");
        int hBack = hLost < 0 ? -1 : hLog.waitFor(ConnectionState.RECONNECTED, hLost);
        check("failover: h RECONNECTED with a new session after its member returned",
                hBack > hLost && sessionId(h) != hSession, "states " + hLog.since(hMark));
        check("failover: h rejoins the latch as a follower",
                // A wait, not a snapshot: any leader change of the ensemble drops o's
                // connection too, and o's latch gives up leadership while SUSPENDED until it
                // is back (never two leaders is checked throughout by the sampler).
                waitUntil(() -> {
                    try {
                        return lh.getParticipants().size() == 2 && !lh.hasLeadership() && lo.hasLeadership();
                    } catch (Exception e) {
                        return false;
                    }
                }),
                "h leads " + lh.hasLeadership() + ", o leads " + lo.hasLeadership());
        sampler.interrupt();
        sampler.join();
        check("failover: never two leaders", !twoLeaders.get(), "h and o led at once");

        cache.close();
        oThread.submit(() -> {
            if (mo.isOwnedByCurrentThread()) {
                mo.release();
            }
            return null;
        }).get(WAIT_MS, TimeUnit.MILLISECONDS);
        oThread.shutdown();
        lh.close();
        lo.close();
        h.close();
        o.close();
        c.close();
    }

    /**
     * Two of three members die while a client is on the third, a follower: it cannot serve, so
     * the client is SUSPENDED, then LOST once the session timeout passed; when the quorum is
     * back it gets a new session (RECONNECTED).
     */
    static void quorumLoss(List<String> members) throws Exception {
        // The survivor is a follower: q names the followers only (and does not track the
        // ensemble). A leader left alone is go-zookeeper's TestNoQuorum case.
        String leader = steer("wait-stable").replaceFirst("^leader ", "");
        List<String> followers = new ArrayList<>(members);
        followers.remove(leader);
        StateLog log = new StateLog();
        CuratorFramework q = connected("quorum loss q", String.join(",", followers), SHORT_SESSION_MS, log, true);
        String survivor = currentServer(q);
        long session = sessionId(q);
        int mark = log.mark();
        List<String> others = new ArrayList<>();
        for (String m : members) {
            if (!m.equals(survivor)) {
                others.add(m);
                steer("kill " + m);
            }
        }
        int suspended = log.waitFor(ConnectionState.SUSPENDED, mark);
        int lost = suspended < 0 ? -1 : log.waitFor(ConnectionState.LOST, suspended);
        check("quorum loss: client on the survivor SUSPENDED then LOST", suspended >= 0 && lost > suspended,
                "states " + log.since(mark));
        for (String m : others) {
            steer("restart " + m);
        }
        steer("wait-stable");
        int back = lost < 0 ? -1 : log.waitFor(ConnectionState.RECONNECTED, lost);
        check("quorum loss: RECONNECTED with a new session once the quorum is back",
                back > lost && sessionId(q) != session, "states " + log.since(mark));
        q.create().creatingParentsIfNeeded().forPath(ROOT + "/quorum-back");
        check("quorum loss: writes work again", q.checkExists().forPath(ROOT + "/quorum-back") != null, "");
        q.close();
    }

    public static void main(String[] args) {
        if (args.length != 2 || !(args[1].equals("standalone") || args[1].equals("ensemble"))) {
            System.err.println("usage: CuratorSuite HOST:PORT[,HOST:PORT...] standalone|ensemble");
            System.exit(2);
        }
        String hosts = args[0];
        List<String> members = new ArrayList<>(hostSet(hosts));
        try {
            basics(hosts);
            recipes(hosts);
            if (args[1].equals("ensemble")) {
                ensembleTracker(members);
                failover(members);
                quorumLoss(members);
            }
        } catch (Throwable t) {
            t.printStackTrace();
            check("suite ran to the end", false, t.toString());
        }
        for (CuratorFramework c : CLIENTS) {
            try {
                c.close();
            } catch (Throwable ignored) {
                // already closed or its connection is gone; the suite is over either way
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.out.flush();
        // Curator's threads are not daemons.
        System.exit(failed == 0 ? 0 : 1);
    }
}
