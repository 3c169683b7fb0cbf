"""Weather: ``/weather Paris`` answers from configured stations.

The config model is the point: nested models, validators, defaults, and a
secret (``api_key``) that is masked in every log line the plugin writes.
A real plugin would call a weather service with the key; this one reads the
``readings`` table so it runs anywhere.

    plugins:
      - path: examples/plugins/weather
        config:
          api_key: ${WEATHER_API_KEY}
          units: metric
          stations:
            paris: {lat: 48.86, lon: 2.35, readings: {temp: 21.5, sky: sunny}}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from callboard.plugin import Context, Plugin, command


class Reading(BaseModel):
    temp: float = Field(description="degrees Celsius")
    sky: str = "clear"


class Station(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    readings: Reading


class Config(BaseModel):
    model_config = {"extra": "forbid"}

    api_key: SecretStr
    units: Literal["metric", "imperial"] = "metric"
    stations: dict[str, Station] = Field(min_length=1)

    @model_validator(mode="after")
    def _lower_case_names(self) -> Config:
        self.stations = {name.lower(): station for name, station in self.stations.items()}
        return self


class Weather(Plugin):
    Config = Config
    config: Config

    @command("weather")
    async def weather(self, ctx: Context) -> None:
        city = (ctx.args or "").strip().lower()
        station = self.config.stations.get(city)
        # what an HTTP client would log: the key is masked before the line leaves the runner
        self.log.info(
            "lookup %s via https://weather.example/v1?key=%s", city, self.config.api_key.get_secret_value()
        )
        if station is None:
            await ctx.reply(f"no station for {city!r}; known: {', '.join(sorted(self.config.stations))}")
        else:
            temp = station.readings.temp
            shown = f"{temp:.1f}°C" if self.config.units == "metric" else f"{temp * 9 / 5 + 32:.1f}°F"
            await ctx.reply(f"{city.title()}: {shown}, {station.readings.sky}")
        ctx.prevent_default()
