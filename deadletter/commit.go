package deadletter

import "sync"

// batch is one caller's encoded records, waiting for a group commit.
type batch struct {
	data    []byte // records, one JSON object per line
	records int

	err  error
	done chan struct{}
	lead bool // woken to commit the next group, not with a result
}

// maxGroupBytes bounds one group commit (one write and fsync, or one
// PutObject). A single batch larger than that is committed alone.
const maxGroupBytes = 16 << 20

// committer runs group commits: the batches of callers that arrive while a
// commit is in progress wait, and the first of them then commits them all in
// one write. There is no goroutine of its own: the caller at the head of the
// queue does the work (the leader) and, when done, wakes the next head.
// Every batch of a group gets the group's outcome.
type committer struct {
	write func(group []*batch) error

	mu    sync.Mutex
	queue []*batch
	busy  bool // a leader is committing
}

// commit queues b and returns once the group holding it is committed or has
// failed.
func (c *committer) commit(b *batch) error {
	b.done = make(chan struct{})
	c.mu.Lock()
	c.queue = append(c.queue, b)
	if c.busy {
		c.mu.Unlock()
		<-b.done
		if !b.lead {
			return b.err
		}
		c.mu.Lock()
	}
	c.busy = true
	// b is the head of the queue: it either started it or was woken as its
	// head. Take the group.
	n, size := 0, 0
	for n < len(c.queue) && (n == 0 || size+len(c.queue[n].data) <= maxGroupBytes) {
		size += len(c.queue[n].data)
		n++
	}
	group := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.mu.Unlock()

	err := c.write(group)

	c.mu.Lock()
	for _, x := range group {
		x.err = err
		if x != b {
			close(x.done)
		}
	}
	if len(c.queue) > 0 {
		next := c.queue[0]
		next.lead = true
		close(next.done)
	} else {
		c.busy = false
		c.queue = nil
	}
	c.mu.Unlock()
	return err
}
