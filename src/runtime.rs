//! The worker runtime shared by replay and the live job: builds the
//! dataflow on a timely worker and exposes an input that accepts records at
//! any time not before the input frontier, a way to advance that frontier,
//! and a probe that says which times are complete.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::campaign::{Campaign, Retention};
use dataflows::model::{Input, Time, Trigger};
use dataflows::operators::Clock;
use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::core::{Probe, UnorderedInput};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

type Update = (Input, Time, isize);
type Handle = UnorderedHandle<Time, CapacityContainerBuilder<Vec<Update>>>;

/// One worker's handle on the job's dataflow.
pub struct Job {
    handle: Handle,
    cap: Option<ActivateCapability<Time>>,
    probe: ProbeHandle<Time>,
    staged: Vec<(Time, Input)>,
    clock: Clock,
    frontier_ms: Time,
}

impl Job {
    /// Builds the job's dataflow on `worker`; `sink` is called on this
    /// worker for each trigger record once its time is complete.
    pub fn build(
        worker: &mut Worker,
        campaigns: &[Campaign],
        retention: &Retention,
        clock: Clock,
        sink: impl FnMut(Trigger) + 'static,
    ) -> Job {
        let sink = Rc::new(RefCell::new(sink));
        let (handle, cap, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let ((handle, cap), stream) =
                scope.new_unordered_input::<CapacityContainerBuilder<Vec<Update>>>();
            let triggers = dataflows::build(stream.as_collection(), campaigns, retention, clock);
            let sink = sink.clone();
            // The probe follows the sink: once it passes a time, every record
            // of that time has been handed to `sink` on every worker.
            let done = triggers.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                "TriggerSink",
                move |_cap, _info| {
                    move |input, _output| {
                        input.for_each(|_cap, data| {
                            let mut sink = sink.borrow_mut();
                            for t in data.drain(..) {
                                (sink)(t);
                            }
                        });
                    }
                },
            );
            let (probe, _) = done.probe();
            (handle, cap, probe)
        });
        Job {
            handle,
            cap: Some(cap),
            probe,
            staged: Vec::new(),
            clock,
            frontier_ms: 0,
        }
    }

    /// The input frontier (ms): records are applied at this time or later.
    pub fn frontier(&self) -> Option<Time> {
        self.cap.as_ref().map(|_| self.frontier_ms)
    }

    /// Stages `input`. A record whose time is before the frontier is applied
    /// at the frontier (its known time raised); returns whether it was late.
    pub fn send(&mut self, mut input: Input) -> bool {
        let late = input.not_before(self.frontier_ms);
        self.staged.push((self.clock.at(input.time()), input));
        late
    }

    /// Hands staged records to the dataflow.
    pub fn flush(&mut self) {
        let Some(cap) = self.cap.as_ref() else { return };
        if self.staged.is_empty() {
            return;
        }
        // Usually in order already (replay feeds by time): then no record moves.
        if !self.staged.is_sorted_by_key(|(t, _)| *t) {
            self.staged.sort_by_key(|(t, _)| *t);
        }
        let mut act = self.handle.activate();
        let mut staged = self.staged.drain(..).peekable();
        while let Some((t, input)) = staged.next() {
            let c = cap.delayed(&t);
            let mut session = act.session(&c);
            session.give((input, t, 1isize));
            while let Some((_, input)) = staged.next_if(|(t2, _)| *t2 == t) {
                session.give((input, t, 1isize));
            }
        }
    }

    /// Promises that no record will be sent before `t` ms (flushing first).
    pub fn advance_to(&mut self, t: Time) {
        self.flush();
        if t > self.frontier_ms {
            self.frontier_ms = t;
        }
        if let Some(cap) = self.cap.as_mut() {
            let b = self.clock.at(self.frontier_ms);
            if b > *cap.time() {
                cap.downgrade(&b);
            }
        }
    }

    /// Closes the input for good.
    pub fn close(&mut self) {
        self.flush();
        self.cap = None;
    }

    /// The latest time (ms) through which every trigger has been emitted on
    /// every worker (`Time::MAX` once the dataflow is complete).
    pub fn completed_through(&self) -> Time {
        let mut through = Time::MAX;
        self.probe.with_frontier(|f| {
            if let Some(t) = f.first() {
                through = t.saturating_sub(1);
            }
        });
        through
    }

    /// Whether every trigger firing at or before `t` ms has been emitted.
    pub fn done_through(&self, t: Time) -> bool {
        !self.probe.less_equal(&self.clock.at(t))
    }
}
