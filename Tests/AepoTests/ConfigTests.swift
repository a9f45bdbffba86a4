import AepoConfig
@testable import AepoCore
import Testing

@Suite struct ConfigTests {
    @Test func defaultRoundTripIsByteIdentical() throws {
        let text = ConfigWriter.emit(Config())
        let parsed = try ConfigCodec.parse(text)
        #expect(parsed == Config())
        #expect(ConfigWriter.emit(parsed) == text)
    }

    @Test func emptyDocumentMeansDefaults() throws {
        #expect(try ConfigCodec.parse("") == Config())
        #expect(try ConfigCodec.parse("{}") == Config())
    }

    @Test func partialDocumentIsFilled() throws {
        let c = try ConfigCodec.parse(#"{"controller": {"target": 0.75, "schedule": {"kind": "piecewise", "points": [{"step": 0, "target": 0.3}, {"step": 10, "target": 1}]}}}"#)
        #expect(c.controller.target == 0.75)
        #expect(c.controller.tHigh == 1.2)
        #expect(c.controller.schedule.points == [SchedulePoint(step: 0, target: 0.3), SchedulePoint(step: 10, target: 1.0)])
        // Non-default documents round-trip too.
        let text = ConfigWriter.emit(c)
        #expect(ConfigWriter.emit(try ConfigCodec.parse(text)) == text)
    }

    @Test func realsAreShortestRoundTrip() {
        let text = ConfigWriter.emit(Config())
        #expect(text.contains("\"clip_ratio_low\": 0.2,"))
        #expect(text.contains("\"alpha\": 0.09375,"))
        #expect(text.contains("\"epsilon\": 1e-06,"))
        #expect(!text.contains("0.20000000000000001"))
    }

    static let badCases: [(String, String, String)] = [
        (#"{"loss": {"bogus": 1}}"#, "loss.bogus", "unknown key"),
        (#"{"loss": {"threads": 1, "threads": 2}}"#, "loss.threads", "duplicate key"),
        (#"{"controller": {"mode": 3}}"#, "controller.mode", "got the integer 3"),
        (#"{"loss": {"threads": 2.0}}"#, "loss.threads", "integer keys do not accept reals"),
        (#"{"controller": {"t_high": 0}}"#, "controller.t_high", "sampler.greedy"),
        (#"{"sampler": {"top_p": 1.5}}"#, "sampler.top_p", "out of range"),
        (#"{"loss": {"clip_ratio_c": }"#, "loss.clip_ratio_c", "line 1, column 27"),
        ("{\n  \"sampler\": {\n    \"top_k\": 1,\n    \"top_k\": 2\n  }\n}", "sampler.top_k", "line 4"),
        ("[1, 2]", "config", "top level must be a JSON object"),
        ("3", "config", "malformed JSON"),
        (#"{"schema_version": 2}"#, "schema_version", "unsupported version 2"),
        (#"{"schema_version": 1.0}"#, "schema_version", "expected the integer 1"),
        (#"{"controller": {"adaptive": {"t_min": 2.5}}}"#, "controller.adaptive.t_max", "t_min"),
        (#"{"loss": {"loss_agg_mode": "seq-mean-token-sum-norm"}}"#, "loss.loss_scale_factor", "loss_scale_factor > 0"),
        (#"{"controller": {"schedule": {"kind": "piecewise"}}}"#, "controller.schedule.points", "at least one"),
        (#"{"controller": {"schedule": {"points": [{"step": 3, "target": 1}, {"step": 1, "target": 1}]}}}"#,
         "controller.schedule.points[1].step", "strictly increasing"),
        (#"{"controller": {"schedule": {"points": [{"step": 3}]}}}"#, "controller.schedule.points[0].target", "missing"),
        (#"{"loss": {"seed": -1}}"#, "loss.seed", "-1 is out of range"),
        (#"{"loss": {"seed": 99999999999999999999}}"#, "loss.seed", "line 1"),
        (#"{"fused": {"chunk_n": 0}}"#, "fused.chunk_n", "out of range"),
        (#"{"advantage": {"norm_adv_by_std_in_grpo": 1}}"#, "advantage.norm_adv_by_std_in_grpo", "expected a boolean"),
        (#"{"sampler": null}"#, "sampler", "expected an object, got null"),
        (#"{"top": 1}"#, "top", "the top level takes advantage, controller, fused, loss, regularizer, sampler, schema_version"),
    ]

    @Test(arguments: badCases)
    func badConfigNamesThePath(_ json: String, _ path: String, _ needle: String) {
        do {
            _ = try ConfigCodec.parse(json)
            Issue.record("accepted \(json)")
        } catch {
            #expect(error.kind == .config)
            #expect(error.argument == path, "\(error.message)")
            #expect(error.message.contains(needle), "\(error.message)")
        }
    }

    @Test func everyKeyIsInTheSchemaOnce() {
        let paths = ConfigSchema.fields.map(\.path)
        #expect(Set(paths).count == paths.count)
        #expect(paths.count == 59)
    }

    /// A default document written out by hand parses to the built-in defaults.
    @Test func apiDocumentDefaultsMatch() throws {
        let doc = """
        {
          "schema_version": 1,
          "loss": {
            "policy_loss": "vanilla",
            "loss_agg_mode": "token-mean",
            "loss_scale_factor": 0,
            "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0,
            "kl_loss_type": "low_var_kl", "kl_loss_coef": 0.0,
            "entropy_coeff": 0.0,
            "clip_cov_ratio": 0.0002, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0,
            "kl_cov_ratio": 0.0002, "ppo_kl_coef": 0.1,
            "seed": 0, "threads": 1
          },
          "advantage": {"estimator": "grpo", "norm_adv_by_std_in_grpo": true, "epsilon": 1e-6, "rloo_singleton": "zero"},
          "regularizer": {"threshold": 0.05, "combine": "replace", "alpha": 0.09375},
          "controller": {
            "mode": "bang_bang", "target": 0.5, "t_high": 1.2, "t_low": 0.8,
            "k_max": 60, "halve_above_target": true, "statistic": "nll",
            "initial_entropy": 0.0, "hysteresis": 0.0, "history": 32,
            "schedule": {"kind": "constant", "end_target": 0.5, "start_step": 0, "end_step": 0, "points": []}
          },
          "sampler": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "greedy": false, "seed": 0, "threads": 1},
          "fused": {"chunk_n": 128, "chunk_v": 8192, "temperature": 1.0, "threads": 1}
        }
        """
        // The adaptive sub-object belongs to the controller tests, so it is left to its
        // defaults here.
        #expect(try ConfigCodec.parse(doc) == Config())
    }
}
