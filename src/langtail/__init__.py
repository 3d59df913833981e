"""langtail: long-tailed image recognition guided by language (VL-LTR, CA4LTR)."""
__version__ = "0.1.0"
