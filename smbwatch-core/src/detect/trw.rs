//! Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan, "Fast Portscan
//! Detection Using Sequential Hypothesis Testing", IEEE S&P 2004).
//!
//! Each first contact of a source with a destination is a Bernoulli trial:
//! success (SYN-ACK) with probability θ0 if the source is benign, θ1 if it is
//! a scanner. The likelihood ratio Λ = Π P(Yi|H1)/P(Yi|H0) is compared with
//! η1 = P_D/P_F (scanner) and η0 = (1−P_D)/(1−P_F) (benign). Sums of logs
//! keep it cheap and stable.

/// What one outcome did to the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Neither bound reached.
    Continue,
    /// Upper bound reached: the source is a scanner; the walk restarts at 0.
    Scanner,
    /// Lower bound reached: the source is benign; the walk restarts at 0.
    Benign,
}

/// Precomputed log steps and bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Trw {
    /// ln(θ1/θ0): added on success (negative).
    pub success: f64,
    /// ln((1−θ1)/(1−θ0)): added on failure (positive).
    pub failure: f64,
    /// ln η1.
    pub upper: f64,
    /// ln η0.
    pub lower: f64,
}

impl Trw {
    /// Steps for the given hypotheses; expects 0 < θ1 < θ0 < 1 and
    /// 0 < P_F < P_D < 1 (the configuration is validated before).
    pub fn new(theta0: f64, theta1: f64, pd: f64, pf: f64) -> Self {
        Self {
            success: (theta1 / theta0).ln(),
            failure: ((1.0 - theta1) / (1.0 - theta0)).ln(),
            upper: (pd / pf).ln(),
            lower: ((1.0 - pd) / (1.0 - pf)).ln(),
        }
    }

    /// The same steps with both bounds `k` times as far: `k` times the
    /// evidence before a decision.
    pub fn widened(self, k: f64) -> Self {
        Self {
            upper: self.upper * k,
            lower: self.lower * k,
            ..self
        }
    }

    /// Add one outcome to `llr`.
    pub fn step(&self, llr: &mut f64, success: bool) -> Decision {
        *llr += if success { self.success } else { self.failure };
        self.decide(llr)
    }

    /// A success already counted turned out a failure: in the same walk its
    /// step is replaced; if the walk restarted since, the failure counts in
    /// the new one (the old walk's decision stands).
    pub fn correct(&self, llr: &mut f64, same_walk: bool) -> Decision {
        *llr += if same_walk {
            self.failure - self.success
        } else {
            self.failure
        };
        self.decide(llr)
    }

    fn decide(&self, llr: &mut f64) -> Decision {
        if *llr >= self.upper {
            *llr = 0.0;
            Decision::Scanner
        } else if *llr <= self.lower {
            *llr = 0.0;
            Decision::Benign
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Trw {
        Trw::new(0.8, 0.2, 0.99, 0.01)
    }

    fn walk(outcomes: &[bool]) -> Vec<Decision> {
        let trw = defaults();
        let mut llr = 0.0;
        outcomes.iter().map(|&ok| trw.step(&mut llr, ok)).collect()
    }

    use Decision::{Benign, Continue, Scanner};

    #[test]
    fn defaults_need_four_failures() {
        // ln 4 = 1.386 per failure; ln 99 = 4.595: three are not enough.
        assert_eq!(walk(&[false; 4]), [Continue, Continue, Continue, Scanner]);
    }

    #[test]
    fn four_successes_are_benign() {
        assert_eq!(walk(&[true; 4]), [Continue, Continue, Continue, Benign]);
    }

    #[test]
    fn one_success_in_five_still_fires() {
        // F F F S F F ... : the success only delays the decision by two probes.
        let seq = [false, false, false, true, false, false];
        assert_eq!(
            walk(&seq),
            [Continue, Continue, Continue, Continue, Continue, Scanner]
        );
    }

    #[test]
    fn correcting_a_success_replaces_its_step() {
        let trw = defaults();
        let mut llr = 0.0;
        for ok in [false, false, true] {
            trw.step(&mut llr, ok);
        }
        // F F S is one net failure; with the S made a failure, three: not yet.
        assert_eq!(trw.correct(&mut llr, true), Continue);
        assert!((llr - 3.0 * trw.failure).abs() < 1e-9);
        // A walk restarted since: the failure is added to the new walk only.
        let mut llr = 0.0;
        assert_eq!(trw.correct(&mut llr, false), Continue);
        assert!((llr - trw.failure).abs() < 1e-9);
        // F F F S, then S -> F: four failures, a scanner.
        let mut llr = 0.0;
        for ok in [false, false, false, true] {
            trw.step(&mut llr, ok);
        }
        assert_eq!(trw.correct(&mut llr, true), Scanner);
    }

    #[test]
    fn alternating_never_decides() {
        let seq: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert!(walk(&seq).iter().all(|d| *d == Continue));
    }
}
