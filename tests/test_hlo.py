"""`dmvfn_jax.hlo`: collectives, their sizes and how often a call runs them, on small HLO texts
written in the two dialects the project meets (XLA CPU annotates loop trip counts, TPU does not)."""

from dmvfn_jax import hlo

TPU_STYLE = """HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %constant.7 = s32[]{:T(128)} constant(28), metadata={op_name="jit(step)"}
  %p = (s32[], f32[8]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %constant.7), direction=LT
}

%body (q: (s32[], f32[8])) -> (s32[], f32[8]) {
  %q = (s32[], f32[8]) parameter(0)
  %g = f32[8]{0:T(1024)} get-tuple-element(%q), index=1
  %psum.3 = f32[8]{0:T(1024)S(1)} all-reduce(%g), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %j = s32[] get-tuple-element(%q), index=0
  ROOT %t = (s32[], f32[8]) tuple(%j, %psum.3)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %ag = bf16[2,8]{1,0} all-gather(%x), dimensions={0}, replica_groups={{0,1}}
  %zero = s32[] constant(0)
  %init = (s32[], f32[8]) tuple(%zero, %x)
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  ROOT %out = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_tpu_loops_run_their_collectives_once_per_trip():
    found = {c.name: c for c in hlo.collectives(TPU_STYLE)}
    assert set(found) == {"psum.3", "ag"}
    assert (found["psum.3"].kind, found["psum.3"].runs, found["psum.3"].result_bytes) == ("all-reduce", 28, 32)
    assert (found["ag"].kind, found["ag"].runs, found["ag"].result_bytes) == ("all-gather", 1, 32)
    s = hlo.summary(list(found.values()))
    assert s["all-reduce"] == {"ops": 1, "runs": 28, "bytes": 28 * 32}
    assert [c.name for c in hlo.forbidden(list(found.values()))] == ["ag"]


def test_cpu_trip_count_annotation_wins():
    text = TPU_STYLE.replace("condition=%cond, body=%body",
                             'condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}')
    runs = {c.name: c.runs for c in hlo.collectives(text)}
    assert runs == {"psum.3": 5, "ag": 1}


def test_shape_bytes():
    assert hlo.shape_bytes("f32[3559944]{0:T(1024)S(1)}") == 4 * 3559944
    assert hlo.shape_bytes("(f32[2,3]{1,0}, bf16[4]{0}, s32[])") == 24 + 8 + 4
    assert hlo.shape_bytes("pred[16,9]{0,1:T(8,128)(4,1)}") == 144
