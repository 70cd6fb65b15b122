"""Reference values of the default spec's columns from TA-Lib and from pandas-ta-classic.

Both libraries are independent of ray_apps; pandas-ta-classic is called with ``talib=False``
so it runs its own pandas code rather than TA-Lib's.
"""

import numpy as np
import pandas as pd
import pandas_ta_classic as pta
import talib


def talib_reference(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """The default spec's columns computed with TA-Lib (one symbol, in time order)."""
    h, low, c, v = (bars[x].to_numpy(float) for x in ("high", "low", "close", "volume"))
    ref = {"logret_1": np.log(talib.ROCR(c, 1)), "logret_5": np.log(talib.ROCR(c, 5))}
    ref["sma_20"] = talib.SMA(c, 20)
    ref["ema_20"] = talib.EMA(c, 20)
    ref["rsi_14"] = talib.RSI(c, 14)
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    ref |= {"macd_12_26_9": macd, "macd_signal_12_26_9": signal, "macd_hist_12_26_9": hist}
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    ref |= {"bb_upper_20_2": upper, "bb_middle_20_2": middle, "bb_lower_20_2": lower}
    ref["bb_pctb_20_2"] = (c - lower) / (upper - lower)
    ref["bb_width_20_2"] = (upper - lower) / middle
    ref["atr_14"] = talib.ATR(h, low, c, 14)
    ref["obv"] = talib.OBV(c, v)
    returns = np.log(c[1:] / c[:-1])
    ref["vol_20"] = np.concatenate([[np.nan], talib.STDDEV(returns, 20)])
    ref["zclose_20"] = (c - talib.SMA(c, 20)) / talib.STDDEV(c, 20)
    ref["zvolume_20"] = (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20)
    k, d = talib.STOCH(h, low, c, 14, 3, 0, 3, 0)
    ref |= {"stoch_k_14_3": k, "stoch_d_14_3": d}
    ref["adx_14"] = talib.ADX(h, low, c, 14)
    return ref


def pandas_ta_reference(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """The default spec's columns computed with pandas-ta-classic's own code."""
    h, low, c, v = (
        bars[x].astype(float).reset_index(drop=True) for x in ("high", "low", "close", "volume")
    )
    ref = {
        "logret_1": pta.log_return(c, length=1),
        "logret_5": pta.log_return(c, length=5),
        "sma_20": pta.sma(c, 20, talib=False),
        "ema_20": pta.ema(c, 20, talib=False),
        "rsi_14": pta.rsi(c, 14, talib=False),
    }
    macd = pta.macd(c, 12, 26, 9, talib=False)
    ref |= {
        "macd_12_26_9": macd["MACD_12_26_9"],
        "macd_signal_12_26_9": macd["MACDs_12_26_9"],
        "macd_hist_12_26_9": macd["MACDh_12_26_9"],
    }
    bb = pta.bbands(c, 20, 2, ddof=0, talib=False)
    lower, middle, upper = (bb[f"BB{x}_20_2.0"] for x in "LMU")
    ref |= {"bb_upper_20_2": upper, "bb_middle_20_2": middle, "bb_lower_20_2": lower}
    ref["bb_pctb_20_2"] = bb["BBP_20_2.0"]
    ref["bb_width_20_2"] = bb["BBB_20_2.0"] / 100.0
    ref["atr_14"] = pta.atr(h, low, c, 14, talib=False)
    ref["obv"] = pta.obv(c, v, talib=False)
    ref["vol_20"] = pta.stdev(pta.log_return(c, length=1), 20, ddof=0, talib=False)
    ref["zclose_20"] = (c - pta.sma(c, 20, talib=False)) / pta.stdev(c, 20, ddof=0, talib=False)
    ref["zvolume_20"] = (v - pta.sma(v, 20, talib=False)) / pta.stdev(v, 20, ddof=0, talib=False)
    stoch = pta.stoch(h, low, c, k=14, d=3, smooth_k=3, talib=False)
    ref |= {"stoch_k_14_3": stoch["STOCHk_14_3_3"], "stoch_d_14_3": stoch["STOCHd_14_3_3"]}
    ref["adx_14"] = pta.adx(h, low, c, 14, talib=False)["ADX_14"]
    return {name: np.asarray(values, dtype=float) for name, values in ref.items()}
