//! What a row of `cargo xtask load` costs in CPU per request: the server's threads by kind,
//! the kernel's share and the context switches, and the load generator's own CPU.
//!
//! Why it exists: on a machine whose cores the load generator and the server share, a
//! throughput ratio is a ratio of CPU per request (the generator's plus the server's). This
//! table makes that measurable in every run instead of in a profiling session: where a
//! verification's CPU goes (runtime workers, log writer, projector), how much of it is the
//! kernel's, and whether the CPU per request explains the measured ratio
//! (docs/benchmarks.md, "CPU per request, by thread").
//!
//! Read from `/proc/<pid>/task/*/schedstat` (time on the CPU, in nanoseconds), `stat` (user
//! and system clock ticks, for the kernel's share) and `status` (context switches) before and
//! after each slice of a row; a thread that exits within a slice loses its share of it. On a
//! system without `/proc` every figure is zero and the table says so.

use std::collections::BTreeMap;
use std::path::Path;

/// The counters of one thread, or of a group of threads summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) on_cpu_ns: u64,
    pub(crate) user_ticks: u64,
    pub(crate) system_ticks: u64,
    pub(crate) voluntary_switches: u64,
    pub(crate) involuntary_switches: u64,
}

impl Counters {
    fn add(&mut self, other: &Self) {
        self.on_cpu_ns += other.on_cpu_ns;
        self.user_ticks += other.user_ticks;
        self.system_ticks += other.system_ticks;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            on_cpu_ns: self.on_cpu_ns.saturating_sub(before.on_cpu_ns),
            user_ticks: self.user_ticks.saturating_sub(before.user_ticks),
            system_ticks: self.system_ticks.saturating_sub(before.system_ticks),
            voluntary_switches: self.voluntary_switches.saturating_sub(before.voluntary_switches),
            involuntary_switches: self.involuntary_switches.saturating_sub(before.involuntary_switches),
        }
    }

    /// The kernel's share of the time on the CPU (0 when nothing was counted).
    pub(crate) fn kernel_share(&self) -> f64 {
        let ticks = self.user_ticks + self.system_ticks;
        if ticks == 0 { 0.0 } else { self.system_ticks as f64 / ticks as f64 }
    }
}

/// The kinds of keyledger's threads the table tells apart (by the name each thread is given;
/// the kernel keeps 15 bytes of it).
pub(crate) const KINDS: [&str; 4] = ["runtime workers", "log writer", "projector", "other"];

fn kind(thread_name: &str) -> &'static str {
    if thread_name.starts_with("tokio-rt-worker") {
        KINDS[0]
    } else if thread_name.starts_with("keyledger-log-w") {
        KINDS[1]
    } else if thread_name.starts_with("keyledger-proj") {
        KINDS[2]
    } else {
        KINDS[3]
    }
}

/// A process's counters, by thread kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProcessCpu {
    pub(crate) by_kind: BTreeMap<&'static str, Counters>,
}

impl ProcessCpu {
    /// The counters of process `pid` now (empty where `/proc` cannot be read).
    pub(crate) fn read(pid: u32) -> Self {
        Self::read_from(&Path::new("/proc").join(pid.to_string()).join("task"))
    }

    /// The counters of this process (the load generator).
    pub(crate) fn read_own() -> Self {
        Self::read(std::process::id())
    }

    fn read_from(tasks: &Path) -> Self {
        let mut by_kind: BTreeMap<&'static str, Counters> = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(tasks) else { return Self::default() };
        for task in entries.flatten() {
            let read = |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
            let counters = parse_thread(&read("schedstat"), &read("stat"), &read("status"));
            by_kind.entry(kind(read("comm").trim())).or_default().add(&counters);
        }
        Self { by_kind }
    }

    /// What was counted between `before` and now.
    pub(crate) fn since(&self, before: &Self) -> Self {
        let by_kind = self
            .by_kind
            .iter()
            .map(|(kind, now)| (*kind, now.since(&before.by_kind.get(kind).copied().unwrap_or_default())))
            .collect();
        Self { by_kind }
    }

    pub(crate) fn add(&mut self, other: &Self) {
        for (kind, counters) in &other.by_kind {
            self.by_kind.entry(kind).or_default().add(counters);
        }
    }

    /// All threads together.
    pub(crate) fn total(&self) -> Counters {
        let mut total = Counters::default();
        for counters in self.by_kind.values() {
            total.add(counters);
        }
        total
    }

    pub(crate) fn kind(&self, kind: &str) -> Counters {
        self.by_kind.get(kind).copied().unwrap_or_default()
    }
}

/// One thread's counters from its `schedstat`, `stat` and `status` files; a field that
/// cannot be read counts 0.
fn parse_thread(schedstat: &str, stat: &str, status: &str) -> Counters {
    let on_cpu_ns = schedstat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    // `stat`'s second field is the name in parentheses, which may itself hold spaces or
    // parentheses: the fields after it are counted from the last ')'.
    let after_name: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are the 14th and 15th fields; the name is the 2nd, so after it they
    // are the 12th and 13th (indices 11 and 12).
    let field = |i: usize| after_name.get(i).and_then(|n| n.parse().ok()).unwrap_or(0);
    let switches = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0)
    };
    Counters {
        on_cpu_ns,
        user_ticks: field(11),
        system_ticks: field(12),
        voluntary_switches: switches("voluntary_ctxt_switches:"),
        involuntary_switches: switches("nonvoluntary_ctxt_switches:"),
    }
}

/// What a row cost: the requests answered (warm-ups included) and the CPU both processes
/// spent meanwhile.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowCost {
    pub(crate) requests: u64,
    /// The time the slices took.
    pub(crate) wall: std::time::Duration,
    /// Of it, the time the row waited after its slices for the audit indexes to catch up.
    pub(crate) settled: std::time::Duration,
    pub(crate) server: ProcessCpu,
    pub(crate) generator: ProcessCpu,
}

impl RowCost {
    pub(crate) fn add(
        &mut self,
        requests: u64,
        wall: std::time::Duration,
        server: &ProcessCpu,
        generator: &ProcessCpu,
    ) {
        self.requests += requests;
        self.wall += wall;
        self.server.add(server);
        self.generator.add(generator);
    }

    /// Microseconds of CPU per request of these counters.
    pub(crate) fn micros_per_request(&self, counters: &Counters) -> f64 {
        if self.requests == 0 { 0.0 } else { counters.on_cpu_ns as f64 / 1e3 / self.requests as f64 }
    }

    /// Context switches per request (voluntary, involuntary) of these counters.
    pub(crate) fn switches_per_request(&self, counters: &Counters) -> (f64, f64) {
        let per = |n: u64| if self.requests == 0 { 0.0 } else { n as f64 / self.requests as f64 };
        (per(counters.voluntary_switches), per(counters.involuntary_switches))
    }

    /// The server's and the generator's CPU per request together: what one request costs
    /// the machine.
    pub(crate) fn machine_micros_per_request(&self) -> f64 {
        self.micros_per_request(&self.server.total()) + self.micros_per_request(&self.generator.total())
    }

    /// How many cores the server and the generator kept busy together, on average.
    pub(crate) fn cores_busy(&self) -> f64 {
        let busy = self.server.total().on_cpu_ns + self.generator.total().on_cpu_ns;
        if self.wall.is_zero() { 0.0 } else { busy as f64 / self.wall.as_nanos() as f64 }
    }
}

/// The table of CPU per request of `rows` (each named), the first being the bare server's:
/// the ratio each row's CPU predicts is the bare row's machine CPU per request over the row's.
pub(crate) fn table(rows: &[(&str, &RowCost)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| Row | server: CPU per request | runtime workers | log writer | projector | other threads | in the kernel | context switches per request (voluntary / involuntary) | load generator: CPU per request | both: CPU per request | cores both kept busy | throughput ratio this predicts |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let bare_machine = rows.first().map_or(0.0, |(_, bare)| bare.machine_micros_per_request());
    for (name, cost) in rows {
        let server = cost.server.total();
        let us = |counters: &Counters| format!("{:.2} µs", cost.micros_per_request(counters));
        let (voluntary, involuntary) = cost.switches_per_request(&server);
        let machine = cost.machine_micros_per_request();
        let predicted = if machine > 0.0 { format!("{:.2}×", bare_machine / machine) } else { "—".into() };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {:.0} % | {voluntary:.3} / {involuntary:.3} | {} | {machine:.2} µs | {:.2} | {predicted} |",
            us(&server),
            us(&cost.server.kind(KINDS[0])),
            us(&cost.server.kind(KINDS[1])),
            us(&cost.server.kind(KINDS[2])),
            us(&cost.server.kind(KINDS[3])),
            server.kernel_share() * 100.0,
            us(&cost.generator.total()),
            cost.cores_busy(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tokio-rt-worker) S 1 2 3 0 -1 4194368 10 0 0 0 731 289 0 0 20 0 9 0 100 0 0";
    const STATUS: &str =
        "Name:\ttokio-rt-worker\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";

    #[test]
    fn a_threads_files_are_read_field_by_field() {
        let counters = parse_thread("123456789 1000 50\n", STAT, STATUS);
        assert_eq!(
            counters,
            Counters {
                on_cpu_ns: 123_456_789,
                user_ticks: 731,
                system_ticks: 289,
                voluntary_switches: 120,
                involuntary_switches: 7,
            }
        );
        assert!((counters.kernel_share() - 289.0 / 1020.0).abs() < 1e-9);
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = STAT.replace("(tokio-rt-worker)", "(a (b) c)");
        assert_eq!(parse_thread("1 0 0", &stat, STATUS).system_ticks, 289);
    }

    #[test]
    fn unreadable_files_count_nothing() {
        assert_eq!(parse_thread("", "", ""), Counters::default());
        assert_eq!(ProcessCpu::read_from(Path::new("/nonexistent/task")), ProcessCpu::default());
    }

    #[test]
    fn threads_are_grouped_by_their_names() {
        assert_eq!(kind("tokio-rt-worker"), "runtime workers");
        assert_eq!(kind("keyledger-log-w"), "log writer");
        assert_eq!(kind("keyledger-proje"), "projector");
        assert_eq!(kind("keyledger-webho"), "other");
    }

    #[test]
    fn a_slice_counts_what_grew_and_rows_add_up() {
        let at = |ns: u64, vol: u64| ProcessCpu {
            by_kind: [(
                "log writer",
                Counters { on_cpu_ns: ns, voluntary_switches: vol, ..Counters::default() },
            )]
            .into_iter()
            .collect(),
        };
        let slice = at(5_000_000, 30).since(&at(2_000_000, 10));
        assert_eq!(slice.kind("log writer").on_cpu_ns, 3_000_000);
        let mut row = RowCost::default();
        let wall = std::time::Duration::from_millis(2);
        row.add(1_000, wall, &slice, &ProcessCpu::default());
        row.add(1_000, wall, &slice, &at(4_000_000, 0));
        assert_eq!(row.micros_per_request(&row.server.total()), 3.0);
        assert_eq!(row.switches_per_request(&row.server.kind("log writer")), (0.02, 0.0));
        assert_eq!(row.machine_micros_per_request(), 5.0);
        assert_eq!(row.cores_busy(), 2.5);
    }

    #[test]
    fn the_table_predicts_a_ratio_from_the_cpu_per_request() {
        let costing = |server_ns: u64, generator_ns: u64| {
            let process = |ns| ProcessCpu {
                by_kind: [("runtime workers", Counters { on_cpu_ns: ns, ..Counters::default() })]
                    .into_iter()
                    .collect(),
            };
            let mut cost = RowCost::default();
            cost.add(
                1_000,
                std::time::Duration::from_millis(10),
                &process(server_ns),
                &process(generator_ns),
            );
            cost
        };
        // Bare: 5 + 5 µs per request; the row: 15 + 5 µs: half the bare server's rate.
        let table =
            table(&[("bare", &costing(5_000_000, 5_000_000)), ("verify", &costing(15_000_000, 5_000_000))]);
        let verify = table.lines().find(|line| line.starts_with("| verify")).unwrap();
        assert!(verify.contains("| 15.00 µs | 15.00 µs | 0.00 µs |"), "{verify}");
        // 20 ms of CPU in 10 ms: both cores busy.
        assert!(verify.ends_with("| 20.00 µs | 2.00 | 0.50× |"), "{verify}");
    }

    #[test]
    fn this_process_is_read_from_proc() {
        if !Path::new("/proc/self/task").exists() {
            return;
        }
        let before = ProcessCpu::read_own();
        let mut x = 0u64;
        // black_box in the loop: an optimised build would otherwise compute it at once.
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let spent = ProcessCpu::read_own().since(&before).total();
        assert!(spent.on_cpu_ns > 0, "the loop's CPU time was not counted");
    }
}
