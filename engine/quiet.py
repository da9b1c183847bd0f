"""Notices nobody can act on, dropped before anything imports the library that logs them.

Installed by ``import engine`` (so by any ``engine.*`` import, whatever a script imports next); it uses
only :mod:`logging`, so it keeps ``import engine`` cheap.

bitsandbytes 0.50 (imported by PEFT, and by transformers for 4-bit weights) tries on CPUs with
AVX-512 BF16 to fetch a faster 4-bit kernel from the Hugging Face Hub through the optional ``kernels``
package, and logs a warning when that package is missing. We never run code fetched from the Hub and
its built-in kernel is what runs then, so the notice is dropped: that message only, on that module's
logger.
"""

from __future__ import annotations

import logging

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropHubKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BNB_KERNEL_NOTICE)


def quiet_bitsandbytes_kernel_notice() -> None:
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropHubKernelNotice) for f in logger.filters):
        logger.addFilter(_DropHubKernelNotice())


quiet_bitsandbytes_kernel_notice()
