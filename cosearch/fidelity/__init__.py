"""``cosearch fidelity``: does a trained supernet rank sub-networks as training them alone would?

Modules: ``pick`` (archs stratified over size or latency and bit mixes), ``proxies``
(zero-cost rankings to beat), ``plan`` (settings, the standalone ``cosearch train --arch``
jobs, the plan file), ``measure`` (inherited and standalone quality), ``stats`` (rank
agreement with bootstrap intervals, within size bins), ``report`` (JSON and plot) and
``run`` (the command: plan, run the jobs with ``cosearch.jobs``, measure, report).
"""
